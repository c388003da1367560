//! XML-RPC, as XenAPI speaks it: a `methodCall` out, a `methodResponse` back.
//!
//! The reply parser is the part that faces the network, so it is written to fail
//! cleanly on anything: it never recurses deeper than [`MAX_DEPTH`] values,
//! never panics, and names what it expected and where (a byte offset), without
//! quoting the reply's text (which could hold anything, a password echoed back
//! included).
//!
//! xapi writes strings untyped (`<value>Halted</value>`), booleans as
//! `<boolean>1</boolean>`, and wraps every answer in a struct with `Status`,
//! `Value` or `ErrorDescription`; see [`envelope`].

use quick_xml::events::Event;
use quick_xml::Reader;
use std::collections::VecDeque;
use std::fmt::Write as _;

/// The deepest nesting of values a reply may have. XenAPI's deepest (a record
/// holding maps) is 4.
pub const MAX_DEPTH: usize = 32;

/// One XML-RPC value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(String),
    Int(i64),
    Bool(bool),
    Double(f64),
    /// Kept as written (`20240101T10:00:00Z`).
    DateTime(String),
    /// Kept as written (base64 text).
    Base64(String),
    Array(Vec<Value>),
    Struct(Vec<(String, Value)>),
    Nil,
}

impl Value {
    pub fn str(s: impl Into<String>) -> Value {
        Value::String(s.into())
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A member of a struct.
    pub fn get(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Struct(members) => members.iter().find(|(n, _)| n == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// What kind of value this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::Int(_) => "int",
            Value::Bool(_) => "boolean",
            Value::Double(_) => "double",
            Value::DateTime(_) => "dateTime",
            Value::Base64(_) => "base64",
            Value::Array(_) => "array",
            Value::Struct(_) => "struct",
            Value::Nil => "nil",
        }
    }

    fn write(&self, out: &mut String) {
        out.push_str("<value>");
        match self {
            Value::String(s) => {
                out.push_str("<string>");
                out.push_str(&quick_xml::escape::escape(s.as_str()));
                out.push_str("</string>");
            }
            Value::Int(i) => {
                let _ = write!(out, "<int>{i}</int>");
            }
            Value::Bool(b) => {
                let _ = write!(out, "<boolean>{}</boolean>", u8::from(*b));
            }
            Value::Double(d) => {
                let _ = write!(out, "<double>{d}</double>");
            }
            Value::DateTime(s) => {
                let _ = write!(
                    out,
                    "<dateTime.iso8601>{}</dateTime.iso8601>",
                    quick_xml::escape::escape(s)
                );
            }
            Value::Base64(s) => {
                let _ = write!(out, "<base64>{}</base64>", quick_xml::escape::escape(s));
            }
            Value::Array(items) => {
                out.push_str("<array><data>");
                items.iter().for_each(|v| v.write(out));
                out.push_str("</data></array>");
            }
            Value::Struct(members) => {
                out.push_str("<struct>");
                for (name, v) in members {
                    out.push_str("<member><name>");
                    out.push_str(&quick_xml::escape::escape(name.as_str()));
                    out.push_str("</name>");
                    v.write(out);
                    out.push_str("</member>");
                }
                out.push_str("</struct>");
            }
            Value::Nil => out.push_str("<nil/>"),
        }
        out.push_str("</value>");
    }
}

/// The body of a `methodCall`.
pub fn encode_call(method: &str, params: &[Value]) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("<?xml version=\"1.0\"?>\n<methodCall><methodName>");
    out.push_str(&quick_xml::escape::escape(method));
    out.push_str("</methodName><params>");
    for p in params {
        out.push_str("<param>");
        p.write(&mut out);
        out.push_str("</param>");
    }
    out.push_str("</params></methodCall>\n");
    out
}

/// A `methodResponse`: a value, or an XML-RPC fault (which xapi itself does not
/// send, but a proxy in front of it may).
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Value(Value),
    Fault { code: i64, string: String },
}

/// Why a reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {offset}: {detail}")]
pub struct ParseError {
    pub offset: u64,
    pub detail: String,
}

/// Reads a `methodResponse`.
pub fn parse_response(body: &[u8]) -> Result<Response, ParseError> {
    let mut p = Parser::new(body);
    p.expect_start("methodResponse")?;
    let response = match p.next_structural()? {
        Tok::Start(name) if name == "params" => {
            p.expect_start("param")?;
            let v = p.value(1)?;
            p.expect_end("param")?;
            p.expect_end("params")?;
            Response::Value(v)
        }
        Tok::Start(name) if name == "fault" => {
            let v = p.value(1)?;
            p.expect_end("fault")?;
            let code = match v.get("faultCode") {
                Some(Value::Int(i)) => *i,
                _ => return Err(p.err("a fault without an int faultCode")),
            };
            let string = match v.get("faultString") {
                Some(Value::String(s)) => s.clone(),
                _ => return Err(p.err("a fault without a string faultString")),
            };
            Response::Fault { code, string }
        }
        other => return Err(p.err(&format!("expected <params> or <fault>, found {}", other.describe()))),
    };
    p.expect_end("methodResponse")?;
    match p.next_structural()? {
        Tok::Eof => Ok(response),
        other => Err(p.err(&format!("{} after the end of the reply", other.describe()))),
    }
}

/// A XenAPI answer, inside the XML-RPC value.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success(Value),
    /// `ErrorDescription`: the error code, then its parameters.
    Failure(Vec<String>),
}

/// Reads XenAPI's `{Status, Value | ErrorDescription}` struct.
pub fn envelope(v: Value) -> Result<Outcome, String> {
    let Value::Struct(members) = v else {
        return Err(format!("the reply is a {}, not the XenAPI status struct", v.kind()));
    };
    let mut status = None;
    let mut value = None;
    let mut description = None;
    for (name, v) in members {
        match name.as_str() {
            "Status" => status = Some(v),
            "Value" => value = Some(v),
            "ErrorDescription" => description = Some(v),
            _ => {}
        }
    }
    match status {
        Some(Value::String(s)) if s == "Success" => value
            .map(Outcome::Success)
            .ok_or_else(|| "Status is Success but the reply has no Value".to_string()),
        Some(Value::String(s)) if s == "Failure" => match description {
            Some(Value::Array(items)) if !items.is_empty() => Ok(Outcome::Failure(
                items
                    .into_iter()
                    .map(|i| match i {
                        Value::String(s) => s,
                        Value::Int(n) => n.to_string(),
                        other => format!("<{}>", other.kind()),
                    })
                    .collect(),
            )),
            Some(Value::Array(_)) => Err("Status is Failure with an empty ErrorDescription".to_string()),
            Some(other) => Err(format!("ErrorDescription is a {}, not an array", other.kind())),
            None => Err("Status is Failure but the reply has no ErrorDescription".to_string()),
        },
        Some(Value::String(_)) => Err("Status is neither Success nor Failure".to_string()),
        Some(other) => Err(format!("Status is a {}, not a string", other.kind())),
        None => Err("the reply has no Status".to_string()),
    }
}

#[derive(Debug, PartialEq)]
enum Tok {
    Start(String),
    End(String),
    Empty(String),
    Text(String),
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Start(n) => format!("<{}>", short(n)),
            Tok::End(n) => format!("</{}>", short(n)),
            Tok::Empty(n) => format!("<{}/>", short(n)),
            Tok::Text(_) => "text".to_string(),
            Tok::Eof => "the end of the reply".to_string(),
        }
    }
}

/// An element name as shown in errors: at most 40 characters.
fn short(name: &str) -> String {
    if name.chars().count() > 40 {
        format!("{}...", name.chars().take(40).collect::<String>())
    } else {
        name.to_string()
    }
}

struct Parser<'a> {
    reader: Reader<&'a [u8]>,
    /// Tokens read ahead, in order.
    ahead: VecDeque<Tok>,
}

impl<'a> Parser<'a> {
    fn new(body: &'a [u8]) -> Self {
        let mut reader = Reader::from_reader(body);
        reader.config_mut().check_end_names = true;
        Parser {
            reader,
            ahead: VecDeque::new(),
        }
    }

    fn err(&self, detail: &str) -> ParseError {
        ParseError {
            offset: self.reader.buffer_position(),
            detail: detail.to_string(),
        }
    }

    fn name(&self, raw: &[u8]) -> Result<String, ParseError> {
        std::str::from_utf8(raw)
            .map(str::to_string)
            .map_err(|_| self.err("an element name that is not UTF-8"))
    }

    /// The next token, with adjacent text, CDATA and entity references joined.
    fn raw_next(&mut self) -> Result<Tok, ParseError> {
        if let Some(t) = self.ahead.pop_front() {
            return Ok(t);
        }
        let mut text: Option<String> = None;
        loop {
            // Text is collected until something else comes; that something is
            // kept for the next call.
            let event = self
                .reader
                .read_event()
                .map_err(|e| self.err(&format!("not well-formed XML ({e})")))?;
            let tok = match event {
                Event::Text(t) => {
                    let s = t.decode().map_err(|e| self.err(&format!("bad text encoding ({e})")))?;
                    text.get_or_insert_with(String::new).push_str(&s);
                    continue;
                }
                Event::CData(t) => {
                    let s = t.decode().map_err(|e| self.err(&format!("bad CDATA encoding ({e})")))?;
                    text.get_or_insert_with(String::new).push_str(&s);
                    continue;
                }
                Event::GeneralRef(r) => {
                    let c = match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        Ok(None) => {
                            let name = r.decode().map_err(|e| self.err(&format!("bad entity ({e})")))?;
                            match quick_xml::escape::resolve_predefined_entity(&name) {
                                Some(s) => s.to_string(),
                                None => return Err(self.err("an unknown entity reference")),
                            }
                        }
                        Err(e) => return Err(self.err(&format!("a bad character reference ({e})"))),
                    };
                    text.get_or_insert_with(String::new).push_str(&c);
                    continue;
                }
                Event::Start(e) => Tok::Start(self.name(e.name().as_ref())?),
                Event::End(e) => Tok::End(self.name(e.name().as_ref())?),
                Event::Empty(e) => Tok::Empty(self.name(e.name().as_ref())?),
                Event::Eof => Tok::Eof,
                Event::DocType(_) => return Err(self.err("a DOCTYPE, which XML-RPC replies never have")),
                Event::Decl(_) | Event::Comment(_) | Event::PI(_) => continue,
            };
            return Ok(match text {
                Some(s) => {
                    self.ahead.push_back(tok);
                    Tok::Text(s)
                }
                None => tok,
            });
        }
    }

    fn peek(&mut self) -> Result<&Tok, ParseError> {
        if self.ahead.is_empty() {
            let t = self.raw_next()?;
            self.ahead.push_front(t);
        }
        match self.ahead.front() {
            Some(t) => Ok(t),
            None => Err(self.err("internal: nothing read ahead")),
        }
    }

    /// The next token that is not whitespace between elements.
    fn next_structural(&mut self) -> Result<Tok, ParseError> {
        loop {
            match self.raw_next()? {
                Tok::Text(s) if s.trim().is_empty() => continue,
                Tok::Text(_) => return Err(self.err("unexpected text between elements")),
                t => return Ok(t),
            }
        }
    }

    fn expect_start(&mut self, name: &str) -> Result<(), ParseError> {
        match self.next_structural()? {
            Tok::Start(n) if n == name => Ok(()),
            other => Err(self.err(&format!("expected <{name}>, found {}", other.describe()))),
        }
    }

    fn expect_end(&mut self, name: &str) -> Result<(), ParseError> {
        match self.next_structural()? {
            Tok::End(n) if n == name => Ok(()),
            other => Err(self.err(&format!("expected </{name}>, found {}", other.describe()))),
        }
    }

    /// Text up to the end tag `name` (which is consumed).
    fn text_until_end(&mut self, name: &str) -> Result<String, ParseError> {
        match self.raw_next()? {
            Tok::Text(s) => {
                self.expect_end(name)?;
                Ok(s)
            }
            Tok::End(n) if n == name => Ok(String::new()),
            other => Err(self.err(&format!("expected text in <{name}>, found {}", other.describe()))),
        }
    }

    /// A `<value>`, whose start tag is next.
    fn value(&mut self, depth: usize) -> Result<Value, ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.err(&format!("values nested deeper than {MAX_DEPTH} levels")));
        }
        match self.next_structural()? {
            Tok::Start(n) if n == "value" => {}
            Tok::Empty(n) if n == "value" => return Ok(Value::String(String::new())),
            other => return Err(self.err(&format!("expected <value>, found {}", other.describe()))),
        }
        // Untyped text is a string; whitespace before a type element is not.
        let text = match self.peek()? {
            Tok::Text(_) => match self.raw_next()? {
                Tok::Text(s) => Some(s),
                _ => None,
            },
            _ => None,
        };
        match self.raw_next()? {
            Tok::End(n) if n == "value" => Ok(Value::String(text.unwrap_or_default())),
            Tok::Start(ty) => {
                if text.as_deref().is_some_and(|t| !t.trim().is_empty()) {
                    return Err(self.err("text and a typed value inside one <value>"));
                }
                let v = self.typed(&ty, depth)?;
                self.expect_end("value")?;
                Ok(v)
            }
            Tok::Empty(ty) => {
                let v = match ty.as_str() {
                    "nil" => Value::Nil,
                    "string" => Value::String(String::new()),
                    "array" => Value::Array(Vec::new()),
                    "struct" => Value::Struct(Vec::new()),
                    "base64" => Value::Base64(String::new()),
                    other => return Err(self.err(&format!("an empty <{}/>, which has no value", short(other)))),
                };
                self.expect_end("value")?;
                Ok(v)
            }
            other => Err(self.err(&format!("expected a value type, found {}", other.describe()))),
        }
    }

    fn typed(&mut self, ty: &str, depth: usize) -> Result<Value, ParseError> {
        Ok(match ty {
            "string" => Value::String(self.text_until_end(ty)?),
            "int" | "i4" | "i8" => {
                let t = self.text_until_end(ty)?;
                Value::Int(
                    t.trim()
                        .parse()
                        .map_err(|_| self.err(&format!("<{ty}> that is not a 64-bit integer")))?,
                )
            }
            "boolean" => match self.text_until_end(ty)?.trim() {
                "1" => Value::Bool(true),
                "0" => Value::Bool(false),
                _ => return Err(self.err("<boolean> that is neither 0 nor 1")),
            },
            "double" => {
                let t = self.text_until_end(ty)?;
                Value::Double(
                    t.trim()
                        .parse()
                        .map_err(|_| self.err("<double> that is not a number"))?,
                )
            }
            "dateTime.iso8601" => Value::DateTime(self.text_until_end(ty)?),
            "base64" => Value::Base64(self.text_until_end(ty)?),
            "nil" => {
                self.expect_end("nil")?;
                Value::Nil
            }
            "array" => {
                let mut items = Vec::new();
                match self.next_structural()? {
                    Tok::Empty(n) if n == "data" => {}
                    Tok::Start(n) if n == "data" => loop {
                        match self.peek_structural()? {
                            Tok::End(n) if n == "data" => {
                                self.next_structural()?;
                                break;
                            }
                            _ => items.push(self.value(depth + 1)?),
                        }
                    },
                    other => return Err(self.err(&format!("expected <data> in <array>, found {}", other.describe()))),
                }
                self.expect_end("array")?;
                Value::Array(items)
            }
            "struct" => {
                let mut members = Vec::new();
                loop {
                    match self.next_structural()? {
                        Tok::End(n) if n == "struct" => break,
                        Tok::Start(n) if n == "member" => {
                            self.expect_start("name")?;
                            let name = self.text_until_end("name")?;
                            let v = self.value(depth + 1)?;
                            self.expect_end("member")?;
                            members.push((name, v));
                        }
                        other => {
                            return Err(self.err(&format!("expected <member> in <struct>, found {}", other.describe())))
                        }
                    }
                }
                Value::Struct(members)
            }
            other => return Err(self.err(&format!("an unknown value type <{}>", short(other)))),
        })
    }

    fn peek_structural(&mut self) -> Result<&Tok, ParseError> {
        loop {
            match self.peek()? {
                Tok::Text(s) if s.trim().is_empty() => {
                    self.ahead.pop_front();
                }
                _ => break,
            }
        }
        self.peek()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_xapi_style_replies() {
        let body = br#"<?xml version="1.0"?>
<methodResponse><params><param><value><struct>
<member><name>Status</name><value>Success</value></member>
<member><name>Value</name><value><array><data><value>OpaqueRef:a&amp;b</value><value><boolean>1</boolean></value>
<value><int>-3</int></value><value/><value><nil/></value></data></array></value></member>
</struct></value></param></params></methodResponse>"#;
        let Response::Value(v) = parse_response(body).unwrap() else {
            panic!("fault")
        };
        let Outcome::Success(v) = envelope(v).unwrap() else {
            panic!("failure")
        };
        assert_eq!(
            v,
            Value::Array(vec![
                Value::str("OpaqueRef:a&b"),
                Value::Bool(true),
                Value::Int(-3),
                Value::str(""),
                Value::Nil
            ])
        );
    }

    #[test]
    fn a_call_round_trips_through_the_parser_shape() {
        let body = encode_call("VM.start", &[Value::str("<s&>"), Value::Bool(false)]);
        assert!(body.contains("<methodName>VM.start</methodName>"));
        assert!(body.contains("<string>&lt;s&amp;&gt;</string>"));
        assert!(body.contains("<boolean>0</boolean>"));
    }

    #[test]
    fn deep_nesting_is_refused_without_recursing_further() {
        let depth = 10_000;
        let mut body = String::from("<methodResponse><params><param>");
        body.push_str(&"<value><array><data>".repeat(depth));
        body.push_str(&"</data></array></value>".repeat(depth));
        body.push_str("</param></params></methodResponse>");
        let e = parse_response(body.as_bytes()).unwrap_err();
        assert!(e.detail.contains("nested deeper"), "{e}");
    }
}
