//! `fsim`: the FreeSWITCH simulator as a standalone program.
fn main() {
    eprintln!("fsim: not built yet");
    std::process::exit(2);
}
