//! The bot's commands: what a message asks for, and the text of the answer. No I/O here, so
//! the behaviour is tested without a homeserver.

/// A command the bot answers.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// `!echo <text>`: say `<text>` back.
    Echo(&'a str),
    /// `!ping`: say "pong" and how long the message took to reach the bot.
    Ping,
    /// `!help`: list the commands.
    Help,
}

impl Command<'_> {
    /// The command's name, for logs (which never carry what users wrote).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Echo(_) => "echo",
            Self::Ping => "ping",
            Self::Help => "help",
        }
    }
}

pub const HELP: &str = "I am an echo bot. Commands:\n\
    !echo <text> — I say <text> back\n\
    !ping — I answer pong, with how long your message took to reach me\n\
    !help — this list";

/// The command a message body holds, if any: the first word, exactly, then its argument.
/// (`!pingpong` is no command; `!echo` needs text.)
pub fn parse(body: &str) -> Option<Command<'_>> {
    let body = body.trim();
    let (word, rest) = match body.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim()),
        None => (body, ""),
    };
    match word {
        "!echo" if !rest.is_empty() => Some(Command::Echo(rest)),
        "!ping" => Some(Command::Ping),
        "!echo" | "!help" => Some(Command::Help),
        _ => None,
    }
}

/// The answer to `command`. `latency_ms`: from the homeserver receiving the message
/// (`origin_server_ts`) to the bot handling it.
pub fn answer(command: &Command<'_>, latency_ms: u64) -> String {
    match command {
        Command::Echo(text) => (*text).to_owned(),
        Command::Ping => format!("pong ({latency_ms} ms from the server to me)"),
        Command::Help => HELP.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_takes_the_rest_of_the_message() {
        assert_eq!(parse("!echo hello world"), Some(Command::Echo("hello world")));
        assert_eq!(parse("  !echo\thello \n"), Some(Command::Echo("hello")));
    }

    #[test]
    fn echo_without_text_gets_the_help() {
        assert_eq!(parse("!echo"), Some(Command::Help));
        assert_eq!(parse("!echo   "), Some(Command::Help));
    }

    #[test]
    fn commands_are_whole_words_at_the_start() {
        assert_eq!(parse("!ping"), Some(Command::Ping));
        assert_eq!(parse("!ping now"), Some(Command::Ping));
        assert_eq!(parse("!pingpong"), None);
        assert_eq!(parse("say !echo hi"), None);
        assert_eq!(parse("hello"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn ping_answers_pong_with_the_latency() {
        assert_eq!(answer(&Command::Ping, 42), "pong (42 ms from the server to me)");
    }

    #[test]
    fn echo_answers_the_text() {
        assert_eq!(answer(&Command::Echo("hello"), 0), "hello");
    }
}
