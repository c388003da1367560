//! xl's domain configuration files (xl.cfg(5)), read as libxlu reads them:
//! `key = value` settings ended by a newline or `;`, where a value is a
//! string (`"..."` or `'...'`, with C escapes), a number, or a `[...]` list
//! of values that may span lines and end in a comma; `#` starts a comment;
//! `key += value` appends. Keys are lower case, as libxlu's lexer wants.
//!
//! Only what tandem needs is interpreted (the name and the disks); the file
//! itself is what tandem copies to the peer, byte for byte.

use std::fmt;

/// One setting's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    String(String),
    /// Kept as written (`512`, `0x10`).
    Number(String),
    List(Vec<Value>),
}

/// Where and why a configuration file is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct CfgError {
    pub line: usize,
    pub message: String,
}

/// A parsed configuration file: its settings, later ones overriding earlier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XlConfig {
    settings: Vec<(String, Value)>,
}

impl XlConfig {
    pub fn parse(text: &str) -> Result<Self, CfgError> {
        Parser {
            chars: text.chars().collect(),
            pos: 0,
            line: 1,
        }
        .file()
    }

    /// The value the last `=` of `key` set, with any later `+=` appended.
    pub fn get(&self, key: &str) -> Option<Value> {
        let mut out: Option<Value> = None;
        for (k, v) in &self.settings {
            if let Some(k) = k.strip_suffix('+') {
                if k == key {
                    out = Some(match (out, v) {
                        (Some(Value::List(mut a)), Value::List(b)) => {
                            a.extend(b.iter().cloned());
                            Value::List(a)
                        }
                        (Some(Value::String(a)), Value::String(b)) => Value::String(a + b),
                        (_, v) => v.clone(),
                    });
                }
            } else if k == key {
                out = Some(v.clone());
            }
        }
        out
    }

    /// A string setting; `Err` names the key when it is there but not a string.
    pub fn string(&self, key: &str) -> Result<Option<String>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!("{key} must be a string, not {other}")),
        }
    }

    /// A list of strings (a single string counts as a list of one, as xl
    /// takes it); `Err` names the key when it holds anything else.
    pub fn strings(&self, key: &str) -> Result<Vec<String>, String> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s]),
            Some(Value::List(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    other => Err(format!("{key} must be a list of strings; it holds {other}")),
                })
                .collect(),
            Some(other) => Err(format!("{key} must be a list of strings, not {other}")),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) => write!(f, "the string {s:?}"),
            Value::Number(n) => write!(f, "the number {n}"),
            Value::List(_) => write!(f, "a list"),
        }
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    line: usize,
}

impl Parser {
    fn err<T>(&self, message: impl Into<String>) -> Result<T, CfgError> {
        Err(CfgError {
            line: self.line,
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    /// Skips blanks and comments; newlines too when `newlines`.
    fn skip(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' | '\r' => {
                    self.bump();
                }
                '\n' if newlines => {
                    self.bump();
                }
                '#' => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                }
                _ => break,
            }
        }
    }

    fn file(mut self) -> Result<XlConfig, CfgError> {
        let mut settings = Vec::new();
        loop {
            self.skip(true);
            while self.peek() == Some(';') {
                self.bump();
                self.skip(true);
            }
            let Some(c) = self.peek() else { break };
            if !c.is_ascii_lowercase() {
                return self.err(format!("expected a setting name, found {c:?}"));
            }
            let mut key = String::new();
            while let Some(c) = self
                .peek()
                .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            {
                key.push(c);
                self.bump();
            }
            self.skip(false);
            match self.bump() {
                Some('=') => {}
                Some('+') if self.peek() == Some('=') => {
                    self.bump();
                    key.push('+');
                }
                Some(c) => return self.err(format!("expected = after {key}, found {c:?}")),
                None => return self.err(format!("expected = after {key}, found the end of the file")),
            }
            self.skip(false);
            let value = self.value(&key)?;
            self.skip(false);
            match self.peek() {
                None | Some('\n') | Some(';') => {}
                Some(c) => return self.err(format!("unexpected {c:?} after the value of {key}")),
            }
            settings.push((key, value));
        }
        Ok(XlConfig { settings })
    }

    fn value(&mut self, key: &str) -> Result<Value, CfgError> {
        match self.peek() {
            Some(q @ ('"' | '\'')) => {
                self.bump();
                self.string(q, key).map(Value::String)
            }
            Some(c) if c.is_ascii_digit() => {
                let mut n = String::new();
                while let Some(c) = self.peek().filter(|c| c.is_ascii_hexdigit() || *c == 'x') {
                    n.push(c);
                    self.bump();
                }
                Ok(Value::Number(n))
            }
            Some('[') => {
                self.bump();
                let mut items = Vec::new();
                loop {
                    self.skip(true);
                    if self.peek() == Some(']') {
                        self.bump();
                        return Ok(Value::List(items));
                    }
                    items.push(self.value(key)?);
                    self.skip(true);
                    match self.bump() {
                        Some(',') => {}
                        Some(']') => return Ok(Value::List(items)),
                        Some(c) => return self.err(format!("expected , or ] in the list of {key}, found {c:?}")),
                        None => return self.err(format!("the list of {key} is not closed")),
                    }
                }
            }
            Some(c) => self.err(format!("expected a value for {key}, found {c:?}")),
            None => self.err(format!("expected a value for {key}, found the end of the file")),
        }
    }

    fn string(&mut self, quote: char, key: &str) -> Result<String, CfgError> {
        let mut s = String::new();
        loop {
            if matches!(self.peek(), None | Some('\n')) {
                return self.err(format!("a string in {key} is not closed"));
            }
            match self.bump() {
                Some(c) if c == quote => return Ok(s),
                Some('\\') => {
                    let c = match self.bump() {
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        Some('v') => '\u{b}',
                        Some('f') => '\u{c}',
                        Some('a') => '\u{7}',
                        Some('b') => '\u{8}',
                        Some(c @ ('\\' | '"' | '\'')) => c,
                        Some('x') => self.code(16, 2, key)?,
                        Some(c) if c.is_digit(8) => {
                            self.pos -= 1;
                            self.code(8, 3, key)?
                        }
                        Some(c) => return self.err(format!("unknown escape \\{c} in a string of {key}")),
                        None => return self.err(format!("a string in {key} is not closed")),
                    };
                    s.push(c);
                }
                Some(c) => s.push(c),
                None => return self.err(format!("a string in {key} is not closed")),
            }
        }
    }

    /// Up to `max` digits of `radix` as one character.
    fn code(&mut self, radix: u32, max: usize, key: &str) -> Result<char, CfgError> {
        let mut n = 0u32;
        let mut digits = 0;
        while digits < max {
            let Some(d) = self.peek().and_then(|c| c.to_digit(radix)) else {
                break;
            };
            n = n * radix + d;
            digits += 1;
            self.bump();
        }
        match char::from_u32(n) {
            Some(c) if digits > 0 && n != 0 => Ok(c),
            _ => self.err(format!("a bad character code in a string of {key}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G1: &str = r#"# PVH guest on the DRBD resource r0
name = "g1"
type = "pvh"
kernel = "/guest/vmlinuz"
memory = 128
vcpus = 1
cpuid = "host,rdtscp=0"
disk = [ "drbd:r0,xvda,w" ]
on_reboot = "destroy"
"#;

    #[test]
    fn reads_a_domain_file() {
        let c = XlConfig::parse(G1).unwrap();
        assert_eq!(c.string("name").unwrap().as_deref(), Some("g1"));
        assert_eq!(c.get("memory"), Some(Value::Number("128".into())));
        assert_eq!(c.strings("disk").unwrap(), vec!["drbd:r0,xvda,w".to_owned()]);
        assert_eq!(c.strings("vif").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn lists_span_lines_with_comments_semicolons_and_escapes() {
        let text =
            "name='a\\'b' ; memory=0x200\ndisk = [\n  'phy:/dev/vg/x,xvda,w', # root\n  \"drbd:r1,xvdb,w\",\n]\n\
                    vnuma = [ [ \"pnode=0\" ], [ \"pnode=1\" ] ]\nextra = \"a\\tb\\x41\\101\"\ndisk += [ 'r2' ]\n";
        let c = XlConfig::parse(text).unwrap();
        assert_eq!(c.string("name").unwrap().as_deref(), Some("a'b"));
        assert_eq!(c.string("extra").unwrap().as_deref(), Some("a\tbAA"));
        assert_eq!(
            c.strings("disk").unwrap(),
            vec!["phy:/dev/vg/x,xvda,w", "drbd:r1,xvdb,w", "r2"]
        );
        assert!(matches!(c.get("vnuma"), Some(Value::List(v)) if v.len() == 2));
    }

    #[test]
    fn the_last_setting_wins() {
        let c = XlConfig::parse("name = \"a\"\nname = \"b\"\n").unwrap();
        assert_eq!(c.string("name").unwrap().as_deref(), Some("b"));
    }

    #[test]
    fn malformed_files_name_the_line_and_the_fault() {
        for (text, line, what) in [
            ("name = \"g1\n", 1, "not closed"),
            ("name = \"g1\"\nmemory 128\n", 2, "expected = after memory"),
            ("Name = \"g1\"\n", 1, "setting name"),
            ("disk = [ 'a' 'b' ]\n", 1, "expected , or ]"),
            ("disk = [ 'a',\n", 2, "end of the file"),
            ("name = \"g1\" \"x\"\n", 1, "after the value of name"),
            ("extra = \"\\q\"\n", 1, "unknown escape"),
            ("name =\n", 1, "expected a value for name"),
        ] {
            let e = XlConfig::parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(what), "{text:?}: {e}");
        }
        let c = XlConfig::parse("name = 3\ndisk = 5\n").unwrap();
        assert!(c.string("name").unwrap_err().contains("name must be a string"));
        assert!(c
            .strings("disk")
            .unwrap_err()
            .contains("disk must be a list of strings"));
    }

    #[test]
    fn never_panics_on_arbitrary_text() {
        let samples = [
            "",
            "\\",
            "[",
            "a=[[[[",
            "a='\\x",
            "a=\"\\777\"",
            "a=0x\n;;;",
            "a = [,]",
            "é = 1",
        ];
        for s in samples {
            let _ = XlConfig::parse(s);
        }
        let bytes: Vec<u8> = (0..4000u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
        for w in bytes.chunks(37) {
            let _ = XlConfig::parse(&String::from_utf8_lossy(w));
        }
    }
}
