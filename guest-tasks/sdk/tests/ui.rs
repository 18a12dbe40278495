//! Misuses of `#[task]` are compile errors that point at the code; what it
//! allows compiles and runs.

#[test]
fn task_attribute_misuse_is_reported_at_the_code() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
    cases.pass("tests/ui-pass/*.rs");
}
