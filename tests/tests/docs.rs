//! The documents that list the error kinds stay in step with the code: the
//! README, the ABI document and the CLI's documentation each name every
//! kind `asyncer::ErrorKind` has.

use asyncer::ErrorKind;

fn read(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_error_kind_is_named_in_the_readme_the_abi_document_and_the_cli_docs() {
    for path in ["README.md", "host/protocol/ABI.md", "host/cli/src/lib.rs"] {
        let text = read(path);
        let missing: Vec<_> = ErrorKind::ALL
            .iter()
            .map(|kind| kind.as_str())
            .filter(|name| {
                // As a whole word: `trap` must not be found in `trapped`.
                !text.match_indices(name).any(|(at, _)| {
                    let before = text[..at].chars().next_back();
                    let after = text[at + name.len()..].chars().next();
                    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                    !word(before) && !word(after)
                })
            })
            .collect();
        assert!(
            missing.is_empty(),
            "{path} does not name the kinds {missing:?}"
        );
    }
}
