//! `patchbay check`: load a phone repo's HEAD commit (or, with `--worktree`, the files on
//! disk) the way the daemon would: its rules with the shipped defaults, `phone.toml`, the
//! greetings. Every problem is printed as `file:line:column` with a hint, the way a person
//! fixes them before committing. Exit 1 on errors, 0 when the commit would go live.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};

use super::CheckArgs;
use crate::contacts::number::Region;
use crate::repo::{CommitFiles, Loader, RepoFile};
use crate::rules::{LoadError, RuleSet, Source, SourceFile};

pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let Some(region) = Region::parse(&args.region) else {
        bail!(
            "--region {:?}: not a country code (expected e.g. CA, FR)",
            args.region
        );
    };
    let (files, origin) = if args.worktree {
        let files = read_worktree(&args.repo)?;
        (files, "working tree".to_owned())
    } else {
        let commit = crate::repo::read_commit(&args.repo, "HEAD", &[])?;
        let short = commit.commit.get(..7).unwrap_or(&commit.commit).to_owned();
        (commit, format!("commit {short}"))
    };
    let mut rule_files = Vec::new();
    for file in &files.files {
        if file.path.starts_with("rules/") && file.path.ends_with(".rhai") {
            let text = String::from_utf8(file.bytes.clone())
                .with_context(|| format!("{}: not UTF-8 text (save it as UTF-8)", file.path))?;
            rule_files.push(SourceFile {
                source: Source::PhoneRepo,
                path: file.path.clone(),
                text,
            });
        }
    }
    let mut errors = 0;
    let summary = match RuleSet::compile(&rule_files) {
        Ok(rules) => {
            for warning in rules.warnings() {
                print_problem("warning", warning);
            }
            let total = rules.rule_ids().count();
            let own = rules
                .rule_ids()
                .filter(|id| matches!(rules.rule_origin(id), Some((Source::PhoneRepo, _))))
                .count();
            format!(
                "{total} rules in {} files OK ({own} from the phone repo's {origin}, the rest patchbay's defaults)",
                rules.file_count()
            )
        }
        Err(rule_errors) => {
            for error in &rule_errors {
                print_problem("error", error);
            }
            errors += rule_errors.len();
            String::new()
        }
    };
    // The rest of the commit (phone.toml, greetings, templates), checked by the same loader
    // the daemon uses; its rule problems were printed above with their hints.
    if let Err(crate::repo::Error::Refused(refusal)) =
        Loader::new(Vec::new(), region, None).load(&files)
    {
        for problem in refusal
            .problems
            .iter()
            .filter(|problem| !problem.file.starts_with("rules/"))
        {
            println!("error: {problem}");
            errors += 1;
        }
    }
    if errors == 0 {
        println!("{summary}");
        return Ok(ExitCode::SUCCESS);
    }
    let plural = if errors == 1 { "" } else { "s" };
    println!(
        "{errors} error{plural} in the {origin}: patchbay would refuse it and keep running the previous commit"
    );
    Ok(ExitCode::from(1))
}

/// `error: rules/20-night.rhai:3:1: rule 'night': unknown key ...` then the hint on its own
/// line.
fn print_problem(kind: &str, problem: &LoadError) {
    let mut place = problem.file.clone();
    if let Some(line) = problem.line {
        place.push_str(&format!(":{line}"));
        if let Some(column) = problem.column {
            place.push_str(&format!(":{column}"));
        }
    }
    match &problem.rule {
        Some(rule) => println!("{kind}: {place}: rule '{rule}': {}", problem.message),
        None => println!("{kind}: {place}: {}", problem.message),
    }
    if let Some(hint) = &problem.hint {
        println!("  hint: {hint}");
    }
}

/// Every file of the working tree (but `.git/`), as a commit would hold them.
fn read_worktree(repo: &Path) -> anyhow::Result<CommitFiles> {
    let mut files = Vec::new();
    let mut pending = vec![repo.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .with_context(|| format!("{}: cannot read the folder", dir.display()))?;
        for entry in entries {
            let path = entry
                .with_context(|| format!("{}: cannot list the folder", dir.display()))?
                .path();
            if path.file_name().is_some_and(|name| name == ".git") {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let bytes = std::fs::read(&path)
                .with_context(|| format!("{}: cannot read the file", path.display()))?;
            let relative = path.strip_prefix(repo).unwrap_or(&path);
            let name = relative
                .components()
                .map(|part| part.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            files.push(RepoFile { path: name, bytes });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(CommitFiles {
        commit: "working tree".into(),
        files,
    })
}
