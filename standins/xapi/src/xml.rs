//! The stand-in's own XML-RPC codec (deliberately not the client's, so the two
//! check each other): reads a `methodCall` as Python's xmlrpc.client and
//! tandem's client write it, writes a `methodResponse` as xapi does (strings
//! untyped, booleans as 0/1, every answer in a `Status` struct).

use quick_xml::events::Event;
use quick_xml::Reader;
use std::fmt::Write as _;

const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Str(String),
    Int(i64),
    Bool(bool),
    Double(f64),
    Array(Vec<Val>),
    Struct(Vec<(String, Val)>),
    Nil,
}

impl Val {
    pub fn s(s: impl Into<String>) -> Val {
        Val::Str(s.into())
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Val::Bool(b) => Some(*b),
            // Some clients send flags as 0/1 ints.
            Val::Int(0) => Some(false),
            Val::Int(1) => Some(true),
            _ => None,
        }
    }

    fn write(&self, out: &mut String) {
        out.push_str("<value>");
        match self {
            // xapi writes strings without a <string> element.
            Val::Str(s) => out.push_str(&quick_xml::escape::escape(s.as_str())),
            Val::Int(i) => {
                let _ = write!(out, "<int>{i}</int>");
            }
            Val::Bool(b) => {
                let _ = write!(out, "<boolean>{}</boolean>", u8::from(*b));
            }
            Val::Double(d) => {
                let _ = write!(out, "<double>{d}</double>");
            }
            Val::Array(items) => {
                out.push_str("<array><data>");
                items.iter().for_each(|v| v.write(out));
                out.push_str("</data></array>");
            }
            Val::Struct(members) => {
                out.push_str("<struct>");
                for (k, v) in members {
                    out.push_str("<member><name>");
                    out.push_str(&quick_xml::escape::escape(k.as_str()));
                    out.push_str("</name>");
                    v.write(out);
                    out.push_str("</member>");
                }
                out.push_str("</struct>");
            }
            Val::Nil => out.push_str("<nil/>"),
        }
        out.push_str("</value>");
    }
}

/// A `methodResponse` holding `v`.
pub fn response(v: &Val) -> String {
    let mut out = String::from("<?xml version=\"1.0\"?><methodResponse><params><param>");
    v.write(&mut out);
    out.push_str("</param></params></methodResponse>");
    out
}

/// XenAPI's success envelope.
pub fn success(v: Val) -> Val {
    Val::Struct(vec![("Status".into(), Val::s("Success")), ("Value".into(), v)])
}

/// XenAPI's failure envelope.
pub fn failure(code: &str, params: &[String]) -> Val {
    let mut d = vec![Val::s(code)];
    d.extend(params.iter().map(|p| Val::s(p.clone())));
    Val::Struct(vec![
        ("Status".into(), Val::s("Failure")),
        ("ErrorDescription".into(), Val::Array(d)),
    ])
}

/// Reads a `methodCall`: the method name and its parameters.
pub fn parse_call(body: &[u8]) -> Result<(String, Vec<Val>), String> {
    let mut r = Reader::from_reader(body);
    r.config_mut().check_end_names = true;
    let mut p = P { r, stack: Vec::new() };
    p.parse()
}

/// An element tree, small and bounded; XML-RPC calls are tiny.
#[derive(Debug)]
struct El {
    name: String,
    text: String,
    kids: Vec<El>,
}

struct P<'a> {
    r: Reader<&'a [u8]>,
    stack: Vec<El>,
}

impl P<'_> {
    fn parse(&mut self) -> Result<(String, Vec<Val>), String> {
        let root = self.tree()?;
        if root.name != "methodCall" {
            return Err(format!("the root element is <{}>, not <methodCall>", root.name));
        }
        let name = root
            .kids
            .iter()
            .find(|k| k.name == "methodName")
            .map(|k| k.text.trim().to_string())
            .ok_or("no <methodName>")?;
        let mut params = Vec::new();
        if let Some(ps) = root.kids.iter().find(|k| k.name == "params") {
            for param in ps.kids.iter().filter(|k| k.name == "param") {
                let v = param
                    .kids
                    .iter()
                    .find(|k| k.name == "value")
                    .ok_or("a <param> without <value>")?;
                params.push(value(v, 0)?);
            }
        }
        Ok((name, params))
    }

    fn tree(&mut self) -> Result<El, String> {
        loop {
            let ev = self.r.read_event().map_err(|e| format!("not well-formed XML: {e}"))?;
            match ev {
                Event::Start(e) | Event::Empty(e) if self.stack.len() > 4 * MAX_DEPTH + 8 => {
                    let _ = e;
                    return Err("nested too deeply".into());
                }
                Event::Start(e) => self.stack.push(El {
                    name: String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                    text: String::new(),
                    kids: Vec::new(),
                }),
                Event::Empty(e) => {
                    let el = El {
                        name: String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                        text: String::new(),
                        kids: Vec::new(),
                    };
                    match self.stack.last_mut() {
                        Some(top) => top.kids.push(el),
                        None => return Ok(el),
                    }
                }
                Event::End(_) => {
                    let el = self.stack.pop().ok_or("an end tag without a start")?;
                    match self.stack.last_mut() {
                        Some(top) => top.kids.push(el),
                        None => return Ok(el),
                    }
                }
                Event::Text(t) => {
                    let s = t.decode().map_err(|e| e.to_string())?;
                    if let Some(top) = self.stack.last_mut() {
                        top.text.push_str(&s);
                    }
                }
                Event::CData(t) => {
                    let s = t.decode().map_err(|e| e.to_string())?;
                    if let Some(top) = self.stack.last_mut() {
                        top.text.push_str(&s);
                    }
                }
                Event::GeneralRef(g) => {
                    let c = match g.resolve_char_ref().map_err(|e| e.to_string())? {
                        Some(c) => c.to_string(),
                        None => {
                            let name = g.decode().map_err(|e| e.to_string())?;
                            quick_xml::escape::resolve_predefined_entity(&name)
                                .ok_or("an unknown entity")?
                                .to_string()
                        }
                    };
                    if let Some(top) = self.stack.last_mut() {
                        top.text.push_str(&c);
                    }
                }
                Event::Eof => return Err("the call ended early".into()),
                Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
            }
        }
    }
}

fn value(v: &El, depth: usize) -> Result<Val, String> {
    if depth > MAX_DEPTH {
        return Err("values nested too deeply".into());
    }
    let Some(t) = v.kids.first() else {
        return Ok(Val::Str(v.text.clone()));
    };
    Ok(match t.name.as_str() {
        "string" => Val::Str(t.text.clone()),
        "int" | "i4" | "i8" => Val::Int(t.text.trim().parse().map_err(|_| "a bad <int>")?),
        "boolean" => match t.text.trim() {
            "1" => Val::Bool(true),
            "0" => Val::Bool(false),
            _ => return Err("a bad <boolean>".into()),
        },
        "double" => Val::Double(t.text.trim().parse().map_err(|_| "a bad <double>")?),
        "dateTime.iso8601" | "base64" => Val::Str(t.text.clone()),
        "nil" => Val::Nil,
        "array" => {
            let mut items = Vec::new();
            if let Some(data) = t.kids.iter().find(|k| k.name == "data") {
                for k in data.kids.iter().filter(|k| k.name == "value") {
                    items.push(value(k, depth + 1)?);
                }
            }
            Val::Array(items)
        }
        "struct" => {
            let mut members = Vec::new();
            for m in t.kids.iter().filter(|k| k.name == "member") {
                let name = m
                    .kids
                    .iter()
                    .find(|k| k.name == "name")
                    .ok_or("a member without a name")?;
                let val = m
                    .kids
                    .iter()
                    .find(|k| k.name == "value")
                    .ok_or("a member without a value")?;
                members.push((name.text.clone(), value(val, depth + 1)?));
            }
            Val::Struct(members)
        }
        other => return Err(format!("an unknown type <{other}>")),
    })
}
