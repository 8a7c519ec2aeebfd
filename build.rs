//! Links libvosk for the `stt` feature: `VOSK_LIB_DIR` names the folder holding libvosk.so;
//! it becomes a link search path and an rpath, so the binary runs without LD_LIBRARY_PATH.
fn main() {
    println!("cargo:rerun-if-env-changed=VOSK_LIB_DIR");
    if std::env::var_os("CARGO_FEATURE_STT").is_none() {
        return;
    }
    if let Ok(dir) = std::env::var("VOSK_LIB_DIR") {
        println!("cargo:rustc-link-search=native={dir}");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
