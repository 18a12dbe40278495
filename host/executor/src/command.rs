//! WASI command modules as tasks: programs with a `_start` (C tools,
//! interpreters, graders' submissions) run with arguments, environment,
//! standard input and directory grants, in a worker process of their own
//! under the same limits, timeouts and events as any task.

pub use asyncer_protocol::CommandOutput;

/// How to invoke a WASI command: its arguments, environment variables and
/// standard input. Directories are granted, and limits set, through
/// [`TaskOptions`](crate::TaskOptions) as for a task.
///
/// The program sees its module's file name as `argv[0]`, then these
/// arguments; its environment is the task's
/// [`Capabilities`](crate::Capabilities) environment plus these variables
/// (which win over a variable of the same name there).
///
/// # Examples
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), asyncer::Error> {
/// use asyncer::{Capabilities, CommandInput, Executor, TaskOptions};
///
/// let exec = Executor::builder().build()?;
/// let tool = exec.load("wc.wasm").await?;
/// assert!(tool.is_command());
/// let run = exec.submit_command_with(
///     &tool,
///     CommandInput::new().arg("-l").env("LANG", "C").stdin("one\ntwo\n"),
///     TaskOptions::new().capabilities(Capabilities::none().read_only_dir("/srv/data", "/data")),
/// )?;
/// let out = run.await?;
/// println!("exit {}: {}", out.exit_code, out.stdout_text());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandInput {
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) stdin: Vec<u8>,
}

impl CommandInput {
    /// No arguments, no extra environment, empty standard input.
    pub fn new() -> Self {
        CommandInput::default()
    }

    /// Adds one argument.
    #[must_use]
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable.
    #[must_use]
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.into()));
        self
    }

    /// Sets the bytes the program reads from standard input (bounded by the
    /// task's `max_input_bytes`).
    #[must_use]
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = bytes.into();
        self
    }

    /// The arguments (after `argv[0]`).
    pub fn arguments(&self) -> &[String] {
        &self.args
    }

    /// The extra environment variables.
    pub fn env_vars(&self) -> &[(String, String)] {
        &self.env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_keep_their_order_and_a_variable_set_twice_keeps_the_last() {
        let input = CommandInput::new()
            .arg("-v")
            .args(["a", "b"])
            .env("K", "1")
            .env("J", "2")
            .env("K", "3")
            .stdin("in");
        assert_eq!(input.arguments(), ["-v", "a", "b"]);
        assert_eq!(
            input.env_vars(),
            [
                ("J".to_owned(), "2".to_owned()),
                ("K".to_owned(), "3".to_owned())
            ]
        );
        assert_eq!(input.stdin, b"in");
    }
}
