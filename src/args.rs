//! Argument types shared by the binaries: durations, the colour choice,
//! and `completions SHELL`.

use std::io::IsTerminal;
use std::time::Duration;

/// When to colour output (`--color`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// Colour when the stream is a terminal and NO_COLOR is not set.
    #[default]
    Auto,
    /// Always colour, even into a pipe.
    Always,
    /// Never colour.
    Never,
}

impl ColorChoice {
    /// Decides for one stream. NO_COLOR (set and non-empty) turns `auto` off;
    /// an explicit `always` still wins, as <https://no-color.org> asks.
    pub fn enabled_for(self, stream: &impl IsTerminal) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && stream.is_terminal()
            }
        }
    }
}

/// Parses a duration such as `10`, `10s`, `250ms`, `1.5s` or `2m`.
/// A bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (try 10s or 250ms)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        other => return Err(format!("unknown unit '{other}' (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("'{text}' is out of range"))
}

/// Shows a duration the way [`parse_duration`] reads it: `2s`, `250ms`,
/// `1.5s`.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis % 1000 == 0 {
        format!("{}s", millis / 1000)
    } else if millis < 1000 {
        format!("{millis}ms")
    } else {
        format!("{}s", duration.as_secs_f64())
    }
}

/// A wait as people read it in notices: seconds with one decimal
/// (`0.2s`, `4.8s`), rounded up so that a wait never reads as `0.0s`.
pub fn format_wait(duration: Duration) -> String {
    let tenths = duration.as_millis().div_ceil(100);
    format!("{}.{}s", tenths / 10, tenths % 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_read_in_tenths_of_a_second() {
        assert_eq!(format_wait(Duration::from_millis(197)), "0.2s");
        assert_eq!(format_wait(Duration::from_millis(4_800)), "4.8s");
        assert_eq!(format_wait(Duration::from_millis(1)), "0.1s");
        assert_eq!(format_wait(Duration::from_secs(30)), "30.0s");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn durations_are_shown_as_they_are_written() {
        for text in ["2s", "250ms", "1.5s", "120s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }
}

/// `chat-server completions SHELL`, `chat-client completions SHELL`:
/// prints a completion script for SHELL (bash, zsh, fish, elvish,
/// powershell), made from the same definitions as `--help`.
#[derive(Debug, clap::Parser)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

impl CompletionsArgs {
    /// Writes the completion script of `command` (the program `bin`) to
    /// stdout.
    pub fn print(&self, mut command: clap::Command, bin: &str) {
        clap_complete::generate(self.shell, &mut command, bin, &mut std::io::stdout());
    }
}

#[cfg(test)]
mod completion_tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn a_completion_script_names_the_options() {
        let command = clap::Command::new("demo").arg(clap::Arg::new("verbose").long("verbose"));
        for shell in ["bash", "zsh", "fish"] {
            let args = CompletionsArgs::parse_from(["completions", shell]);
            let mut out = Vec::new();
            clap_complete::generate(args.shell, &mut command.clone(), "demo", &mut out);
            let script = String::from_utf8(out).unwrap();
            assert!(script.contains("verbose"), "{shell}: {script}");
        }
        assert!(CompletionsArgs::try_parse_from(["completions", "tcsh"]).is_err());
    }
}
