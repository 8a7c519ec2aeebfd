//! `patchbay check`: compile a phone repo's rules (at HEAD, or on disk with `--worktree`)
//! together with the shipped defaults, and report every error as `file:line:column` with a
//! hint, the way a person fixes them before committing. Exit 1 on errors, 0 when clean.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::CheckArgs;
use crate::rules::{LoadError, RuleSet, Source, SourceFile};

pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let (files, origin) = if args.worktree {
        (read_worktree(&args.repo)?, "working tree".to_owned())
    } else {
        let commit = crate::repo::read_commit(&args.repo, "HEAD", &["rules/"])?;
        let short = commit.commit.get(..7).unwrap_or(&commit.commit).to_owned();
        let files = commit
            .files
            .into_iter()
            .filter(|file| file.path.ends_with(".rhai"))
            .map(|file| {
                let text = String::from_utf8(file.bytes)
                    .with_context(|| format!("{}: not UTF-8 text", file.path))?;
                Ok(SourceFile {
                    source: Source::PhoneRepo,
                    path: file.path,
                    text,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        (files, format!("commit {short}"))
    };
    match RuleSet::compile(&files) {
        Ok(rules) => {
            for warning in rules.warnings() {
                print_problem("warning", warning);
            }
            let total = rules.rule_ids().count();
            let own = rules
                .rule_ids()
                .filter(|id| matches!(rules.rule_origin(id), Some((Source::PhoneRepo, _))))
                .count();
            println!(
                "{total} rules in {} files OK ({own} from the phone repo's {origin}, the rest patchbay's defaults)",
                rules.file_count()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for error in &errors {
                print_problem("error", error);
            }
            let plural = if errors.len() == 1 { "" } else { "s" };
            println!(
                "{} error{plural} in the rules of the {origin}: patchbay would keep running the previous rules",
                errors.len()
            );
            Ok(ExitCode::from(1))
        }
    }
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

/// The `.rhai` files under `repo/rules/` as they are on disk, in lexical order.
fn read_worktree(repo: &Path) -> anyhow::Result<Vec<SourceFile>> {
    let root = repo.join("rules");
    let mut files = Vec::new();
    let mut pending = vec![root.clone()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .with_context(|| format!("{}: cannot read the rules folder", dir.display()))?;
        for entry in entries {
            let path = entry
                .with_context(|| format!("{}: cannot list the folder", dir.display()))?
                .path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rhai") {
                let text = std::fs::read_to_string(&path).with_context(|| {
                    format!("{}: cannot read (expected UTF-8 text)", path.display())
                })?;
                let relative = path.strip_prefix(repo).unwrap_or(&path);
                let name = relative
                    .components()
                    .map(|part| part.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                files.push(SourceFile {
                    source: Source::PhoneRepo,
                    path: name,
                    text,
                });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}
