//! The domain XML libvirt writes to a hook's stdin: the domain's name and uuid and
//! every `<disk>` of `<devices>`.
//!
//! Only `/domain/name`, `/domain/uuid` and `/domain/devices/disk` (with its
//! `source`, `target`, `driver` and the `source` of each `backingStore` in its
//! chain) are read. Everything else libvirt may emit (namespaced elements such as
//! `qemu:commandline`, metadata, elements newer than this code, comments, CDATA,
//! processing instructions, a DOCTYPE) is skipped, but the whole document must be
//! well-formed: a hook that cannot be sure it saw every disk must not answer "no
//! DRBD disk". A `<disk>` anywhere but directly under `/domain/devices` (in
//! `<metadata>`, say) is not a disk of the domain and is ignored.

use quick_xml::events::attributes::AttrError;
use quick_xml::events::{BytesStart, Event};
use quick_xml::{Decoder, Reader};

/// Why the domain XML could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("the input is empty (expected libvirt domain XML)")]
    Empty,
    /// `line` and `column` are 1-based; `column` counts characters, `offset` bytes.
    #[error("line {line}, column {column} (byte {offset}): {message}")]
    At {
        line: usize,
        column: usize,
        offset: usize,
        message: String,
    },
}

impl XmlError {
    pub(crate) fn at(input: &[u8], offset: usize, message: impl Into<String>) -> Self {
        let (line, column) = locate(input, offset);
        XmlError::At {
            line,
            column,
            offset,
            message: crate::one_line(&message.into(), MESSAGE_MAX),
        }
    }
}

/// Messages quote bits of the document; a quoted tag can be long.
const MESSAGE_MAX: usize = 300;

/// Line and column (1-based, column in characters) of a byte offset. Works on
/// bytes so that an offset inside a character, or past the end, cannot panic.
pub(crate) fn locate(input: &[u8], offset: usize) -> (usize, usize) {
    let before = &input[..offset.min(input.len())];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    // UTF-8 continuation bytes do not start a character.
    let column = 1 + before[line_start..].iter().filter(|&&b| b & 0xC0 != 0x80).count();
    (line, column)
}

/// What the hook needs to know about a domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainInfo {
    /// `<name>`, whitespace-trimmed. The hook's own argument is authoritative.
    pub name: Option<String>,
    pub uuid: Option<String>,
    /// Every `/domain/devices/disk`, in document order.
    pub disks: Vec<Disk>,
}

/// One `<disk>` of `<devices>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disk {
    /// `type`: block, file, network, volume, dir, nvme, vhostuser (libvirt's default is file).
    pub disk_type: Option<String>,
    /// `device`: disk, cdrom, floppy, lun (libvirt's default is disk).
    pub device: Option<String>,
    /// The disk's own `<source>` (the first, if there were several).
    pub source: Option<DiskSource>,
    /// The `<source>` of every `<backingStore>` in the chain, top first: a
    /// qcow2 overlay on a DRBD base image needs the base Primary too.
    pub backing: Vec<DiskSource>,
    /// `<target dev=>`, the guest-side name (vda, sda, xvda, hdc, ...).
    pub target: Option<String>,
    /// `<target bus=>`.
    pub target_bus: Option<String>,
    /// `<driver name=>`: qemu, phy, file, tap, ... Xen configs converted from
    /// `drbd:R` carry `drbd` here.
    pub driver: Option<String>,
}

/// The attributes of a `<source>` that can name a disk's storage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskSource {
    pub dev: Option<String>,
    pub file: Option<String>,
    pub dir: Option<String>,
    pub protocol: Option<String>,
    pub name: Option<String>,
    pub pool: Option<String>,
    pub volume: Option<String>,
}

impl DiskSource {
    /// The host path this source names (`dev`, `file` or `dir`), if any.
    pub fn local_path(&self) -> Option<&str> {
        self.dev.as_deref().or(self.file.as_deref()).or(self.dir.as_deref())
    }
}

/// Reads domain XML given as bytes (what stdin holds); it must be UTF-8, which
/// is what libvirt writes.
pub fn parse_domain_xml_bytes(input: &[u8]) -> Result<DomainInfo, XmlError> {
    match std::str::from_utf8(input) {
        Ok(text) => parse_domain_xml(text),
        Err(e) => Err(XmlError::at(
            input,
            e.valid_up_to(),
            "the input is not valid UTF-8 (libvirt writes domain XML as UTF-8)",
        )),
    }
}

/// Reads libvirt domain XML. Never panics; every error names where it is.
pub fn parse_domain_xml(input: &str) -> Result<DomainInfo, XmlError> {
    if input.trim_start_matches('\u{feff}').trim().is_empty() {
        return Err(XmlError::Empty);
    }
    Parser::new(input).run()
}

/// Where an open element sits, as far as this parser cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Domain,
    Name,
    Uuid,
    Devices,
    Disk,
    BackingStore,
    Other,
}

struct Parser<'a> {
    input: &'a str,
    /// Open elements: what each is and the byte offset of its `<`, which names
    /// it in the error for a document that ends before it is closed.
    stack: Vec<(Node, usize)>,
    seen_root: bool,
    /// Text of the `<name>` or `<uuid>` being read.
    text: String,
    info: DomainInfo,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Parser {
            input,
            stack: Vec::new(),
            seen_root: false,
            text: String::new(),
            info: DomainInfo::default(),
        }
    }

    fn err(&self, offset: usize, message: impl Into<String>) -> XmlError {
        XmlError::at(self.input.as_bytes(), offset, message)
    }

    /// The name that starts just after `offset` (an element's `<`, or the byte
    /// before an attribute), for messages.
    fn name_at(&self, offset: usize) -> &str {
        let rest = self.input.get(offset.saturating_add(1)..).unwrap_or("");
        let end = rest
            .find(|c: char| c.is_whitespace() || matches!(c, '/' | '>' | '='))
            .unwrap_or(rest.len());
        rest.get(..end).unwrap_or("")
    }

    /// quick-xml counts attribute errors from just after the tag's `<` and words
    /// them by its own grammar; this places them in the document and names the attribute.
    fn attr_error(&self, tag_at: usize, err: &AttrError) -> XmlError {
        let (rel, what) = match *err {
            AttrError::ExpectedEq(p) => (p, "an attribute name not followed by '='"),
            AttrError::ExpectedValue(p) => (p, "'=' not followed by a value"),
            AttrError::UnquotedValue(p) => (p, "an attribute value without quotes"),
            AttrError::ExpectedQuote(p, _) => (p, "an attribute value whose quote is not closed"),
            AttrError::Duplicated(p, _) => (p, "a duplicate attribute"),
        };
        let at = tag_at.saturating_add(1).saturating_add(rel);
        let attr = self.name_at(at.saturating_sub(1));
        let attr = if attr.is_empty() || attr.contains(['=', '"', '\'', '<']) {
            String::new()
        } else {
            format!(" ({attr})")
        };
        self.err(at, format!("in <{}>: {what}{attr}", self.name_at(tag_at)))
    }

    fn collecting(&self) -> bool {
        matches!(self.stack.last(), Some((Node::Name | Node::Uuid, _)))
    }

    fn run(mut self) -> Result<DomainInfo, XmlError> {
        let mut reader = Reader::from_str(self.input);
        let decoder = reader.decoder();
        loop {
            let pos = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
            let event = match reader.read_event() {
                Ok(ev) => ev,
                Err(e) => {
                    let at = usize::try_from(reader.error_position()).unwrap_or(usize::MAX);
                    return Err(self.err(at, e.to_string()));
                }
            };
            match event {
                Event::Start(e) => {
                    let node = self.open(&e, pos, decoder)?;
                    self.stack.push((node, pos));
                }
                Event::Empty(e) => {
                    let node = self.open(&e, pos, decoder)?;
                    self.close(node);
                }
                Event::End(_) => {
                    // quick-xml has already checked that the name matches.
                    match self.stack.pop() {
                        Some((node, _)) => self.close(node),
                        None => return Err(self.err(pos, "an end tag with no element open")),
                    }
                }
                Event::Text(t) => {
                    if self.stack.is_empty() {
                        if !t.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')) {
                            return Err(self.err(pos, "text outside the root element"));
                        }
                    } else if self.collecting() {
                        let s = t.decode().map_err(|e| self.err(pos, e.to_string()))?;
                        self.text.push_str(&s);
                    }
                }
                Event::CData(t) => {
                    if self.stack.is_empty() {
                        return Err(self.err(pos, "CDATA outside the root element"));
                    }
                    if self.collecting() {
                        let s = t.decode().map_err(|e| self.err(pos, e.to_string()))?;
                        self.text.push_str(&s);
                    }
                }
                Event::GeneralRef(r) => {
                    if self.stack.is_empty() {
                        return Err(self.err(pos, "an entity reference outside the root element"));
                    }
                    // Resolved only where the value is used: an entity a DOCTYPE
                    // declares elsewhere in the document does not matter here.
                    if self.collecting() {
                        let name = r.decode().map_err(|e| self.err(pos, e.to_string()))?;
                        match r.resolve_char_ref() {
                            Ok(Some(c)) => self.text.push(c),
                            Ok(None) => match quick_xml::escape::resolve_predefined_entity(&name) {
                                Some(s) => self.text.push_str(s),
                                None => return Err(self.err(pos, format!("unknown entity &{name};"))),
                            },
                            Err(e) => return Err(self.err(pos, format!("&{name};: {e}"))),
                        }
                    }
                }
                Event::Eof => break,
                Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
            }
        }
        if let Some(&(_, open_at)) = self.stack.last() {
            let name = self.name_at(open_at).to_owned();
            let (line, _) = locate(self.input.as_bytes(), open_at);
            return Err(self.err(
                self.input.len(),
                format!("the input ends before <{name}> (opened on line {line}) is closed"),
            ));
        }
        if !self.seen_root {
            return Err(self.err(self.input.len(), "no root element (expected <domain>)"));
        }
        Ok(self.info)
    }

    /// Handles a start or empty tag and says what it is.
    fn open(&mut self, e: &BytesStart<'_>, pos: usize, decoder: Decoder) -> Result<Node, XmlError> {
        // Every attribute list is checked, read or not: a malformed document is
        // refused wherever the fault is, as libvirt's own parser would.
        for attr in e.attributes() {
            if let Err(err) = attr {
                return Err(self.attr_error(pos, &err));
            }
        }
        let parent = self.stack.last().map(|&(node, _)| node);
        let name = e.name();
        let node = match (parent, name.as_ref()) {
            (None, tag) => {
                if self.seen_root {
                    return Err(self.err(pos, "a second root element (a document has exactly one)"));
                }
                self.seen_root = true;
                if tag != b"domain" {
                    let found = self.name_at(pos).to_owned();
                    return Err(self.err(pos, format!("the root element is <{found}>, not <domain>")));
                }
                Node::Domain
            }
            (Some(Node::Domain), b"name") => Node::Name,
            (Some(Node::Domain), b"uuid") => Node::Uuid,
            (Some(Node::Domain), b"devices") => Node::Devices,
            (Some(Node::Devices), b"disk") => {
                let disk = Disk {
                    disk_type: self.attr(e, "type", pos, decoder)?,
                    device: self.attr(e, "device", pos, decoder)?,
                    ..Disk::default()
                };
                self.info.disks.push(disk);
                Node::Disk
            }
            (Some(Node::Disk), b"source") => {
                let source = self.source(e, pos, decoder)?;
                if let Some(disk) = self.info.disks.last_mut() {
                    disk.source.get_or_insert(source);
                }
                Node::Other
            }
            (Some(Node::Disk), b"target") => {
                let dev = self.attr(e, "dev", pos, decoder)?;
                let bus = self.attr(e, "bus", pos, decoder)?;
                if let Some(disk) = self.info.disks.last_mut() {
                    disk.target = disk.target.take().or(dev);
                    disk.target_bus = disk.target_bus.take().or(bus);
                }
                Node::Other
            }
            (Some(Node::Disk), b"driver") => {
                let driver = self.attr(e, "name", pos, decoder)?;
                if let Some(disk) = self.info.disks.last_mut() {
                    disk.driver = disk.driver.take().or(driver);
                }
                Node::Other
            }
            (Some(Node::Disk | Node::BackingStore), b"backingStore") => Node::BackingStore,
            (Some(Node::BackingStore), b"source") => {
                let source = self.source(e, pos, decoder)?;
                if let Some(disk) = self.info.disks.last_mut() {
                    disk.backing.push(source);
                }
                Node::Other
            }
            _ => Node::Other,
        };
        if matches!(node, Node::Name | Node::Uuid) {
            self.text.clear();
        }
        Ok(node)
    }

    fn close(&mut self, node: Node) {
        let slot = match node {
            Node::Name => &mut self.info.name,
            Node::Uuid => &mut self.info.uuid,
            _ => return,
        };
        let text = self.text.trim();
        if slot.is_none() && !text.is_empty() {
            *slot = Some(text.to_owned());
        }
    }

    fn source(&self, e: &BytesStart<'_>, pos: usize, decoder: Decoder) -> Result<DiskSource, XmlError> {
        Ok(DiskSource {
            dev: self.attr(e, "dev", pos, decoder)?,
            file: self.attr(e, "file", pos, decoder)?,
            dir: self.attr(e, "dir", pos, decoder)?,
            protocol: self.attr(e, "protocol", pos, decoder)?,
            name: self.attr(e, "name", pos, decoder)?,
            pool: self.attr(e, "pool", pos, decoder)?,
            volume: self.attr(e, "volume", pos, decoder)?,
        })
    }

    fn attr(&self, e: &BytesStart<'_>, key: &str, pos: usize, decoder: Decoder) -> Result<Option<String>, XmlError> {
        let bad = |err: quick_xml::Error| self.err(pos, format!("in <{}>, attribute {key}: {err}", self.name_at(pos)));
        let Some(attr) = e.try_get_attribute(key).map_err(|x| bad(x.into()))? else {
            return Ok(None);
        };
        let value = attr.decode_and_unescape_value(decoder).map_err(bad)?;
        Ok(Some(value.into_owned()))
    }
}
