//! A small element tree over `quick-xml`, with the line each element starts on.
//!
//! The returns are a few hundred kilobytes, and every format is read by looking elements up by
//! name wherever a version put them, so a tree is simpler and safer than a streaming state
//! machine per format. Names compare without case and without namespace prefix: versions differ
//! in both (`CINdetails`/`CINDetails`, `ctf:Pupil`).
//!
//! The tree is bounded while it is built: nesting by `limits.xml_depth` (lookups and dropping
//! the tree recurse, so 60,000 nested elements would overflow the stack), each element's text
//! by `limits.field_bytes`. Messages never quote the document's text: quick-xml's own errors
//! are replaced by fixed descriptions, because some of them quote what was found, and an
//! element is named only once the document has closed an element of that name. A start tag
//! whose `>` is corrupted runs into the value after it (`<Surname6Jane Doe</Surname>` opens an
//! element named `Surname6Jane`), and such a name never closes.

use std::collections::HashSet;

use quick_xml::errors::{Error as XmlError, IllFormedError};
use quick_xml::events::Event;
use quick_xml::Reader;

use super::{ImportError, Limits, Lines};

/// One element: its local name, the line it opens on, its text (leaf elements only) and its
/// children in document order.
#[derive(Debug, Default)]
pub struct Element {
    pub name: String,
    pub line: usize,
    pub text: String,
    pub children: Vec<Element>,
    /// Where the first non-blank text starts, to locate stray text.
    text_line: usize,
    /// The element's size in the file, tags included, for `limits.record_bytes`.
    bytes: usize,
}

impl Element {
    /// Direct children with this name.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children
            .iter()
            .filter(move |c| c.name.eq_ignore_ascii_case(name))
    }

    /// The first direct child with this name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// The first element with this name anywhere below, depth first: versions move elements
    /// between wrappers (`Pupil/Sex` and `Pupil/BasicDetails/Sex`).
    pub fn find(&self, name: &str) -> Option<&Element> {
        self.children.iter().find_map(|c| {
            if c.name.eq_ignore_ascii_case(name) {
                Some(c)
            } else {
                c.find(name)
            }
        })
    }

    /// Every element with this name anywhere below, in document order.
    pub fn find_all<'a>(&'a self, name: &str, out: &mut Vec<&'a Element>) {
        for c in &self.children {
            if c.name.eq_ignore_ascii_case(name) {
                out.push(c);
            } else {
                c.find_all(name, out);
            }
        }
    }

    /// The trimmed, non-empty text of the first descendant of any of these names.
    pub fn text_of(&self, names: &[&str]) -> Option<(&str, &Element)> {
        names.iter().find_map(|n| {
            self.find(n)
                .map(|e| (e.text.trim(), e))
                .filter(|(t, _)| !t.is_empty())
        })
    }

    /// An error located at this element.
    pub fn error(&self, file: &str, reason: impl Into<String>) -> ImportError {
        ImportError::Malformed {
            file: file.to_string(),
            line: self.line,
            at: Some(format!("<{}>", self.name)),
            reason: reason.into(),
        }
    }

    /// Refuses a record element larger than `limits.record_bytes`.
    pub fn record_within(&self, file: &str, limits: &Limits) -> Result<(), ImportError> {
        if self.bytes > limits.record_bytes {
            return Err(self.error(
                file,
                format!(
                    "record of {} bytes, over the limit of {} bytes (limits.record_bytes)",
                    self.bytes, limits.record_bytes
                ),
            ));
        }
        Ok(())
    }

    /// The text of the first descendant of these names, read with one of the `values` readers;
    /// an unreadable value is an error at that element.
    pub fn parse_of<T>(
        &self,
        file: &str,
        names: &[&str],
        read: impl Fn(&str) -> Result<T, &'static str>,
    ) -> Result<Option<T>, ImportError> {
        self.text_of(names)
            .map(|(t, e)| read(t).map_err(|r| e.error(file, r)))
            .transpose()
    }

    /// The trimmed, non-empty text of a direct child.
    pub fn child_text(&self, name: &str) -> Option<(&str, &Element)> {
        self.child(name)
            .map(|e| (e.text.trim(), e))
            .filter(|(t, _)| !t.is_empty())
    }
}

/// A description of a quick-xml error that quotes nothing from the document.
fn describe(e: &XmlError) -> String {
    match e {
        // Fixed texts ("tag not closed: `>` not found before end of input").
        XmlError::Syntax(s) => format!("syntax error: {s}"),
        XmlError::IllFormed(i) => match i {
            IllFormedError::MissingDeclVersion(_) => "the XML declaration has no version first",
            IllFormedError::MissingDoctypeName => "a DOCTYPE without a name",
            IllFormedError::MissingEndTag(_) => "an element is not closed",
            IllFormedError::UnmatchedEndTag(_) => "a closing tag without an open element",
            IllFormedError::MismatchedEndTag { .. } => {
                "a closing tag that does not match the open element"
            }
            IllFormedError::DoubleHyphenInComment => "`--` inside a comment",
            IllFormedError::UnclosedReference => "a character or entity reference without its `;`",
        }
        .into(),
        XmlError::InvalidAttr(_) => "a malformed attribute".into(),
        XmlError::Encoding(_) => "not UTF-8 text (save the export as UTF-8)".into(),
        XmlError::Escape(_) => "a malformed character or entity reference".into(),
        XmlError::Namespace(_) => "a malformed namespace declaration".into(),
        XmlError::Io(_) => "the document could not be read".into(),
    }
}

/// Parses a whole document. Mismatched or unclosed tags, text after the root and undecodable
/// bytes are errors naming the line, and so is anything over `limits`. Text between the child
/// elements of a container (which no format defines) is not an error: it is ignored and reported
/// in `warnings` by its line, so the import report shows it.
pub fn parse(
    file: &str,
    text: &str,
    limits: &Limits,
    warnings: &mut Vec<String>,
) -> Result<Element, ImportError> {
    let lines = Lines::new(text);
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(false);
    // Open elements, each with the offset its start tag begins at.
    let mut stack: Vec<(Element, usize)> = Vec::new();
    let mut root: Option<Element> = None;
    // Names of elements the document has closed: the ones a message may name.
    let mut known: HashSet<String> = HashSet::new();
    let fail = |known: &HashSet<String>, pos: u64, element: Option<&str>, reason: String| {
        ImportError::Malformed {
            file: file.to_string(),
            line: lines.line_of(pos as usize),
            at: element
                .filter(|e| known.contains(*e))
                .map(|e| format!("<{e}>")),
            reason,
        }
    };
    let too_deep = || {
        format!(
            "elements nested more than {} deep (limits.xml_depth)",
            limits.xml_depth
        )
    };
    let too_long = || {
        format!(
            "text over the limit of {} bytes (limits.field_bytes)",
            limits.field_bytes
        )
    };
    loop {
        let before = reader.buffer_position();
        let event = match reader.read_event() {
            Ok(e) => e,
            Err(e) => {
                let open = stack.last().map(|(e, _)| e.name.clone());
                return Err(fail(
                    &known,
                    reader.error_position(),
                    open.as_deref(),
                    describe(&e),
                ));
            }
        };
        let open_name = |stack: &[(Element, usize)]| stack.last().map(|(e, _)| e.name.clone());
        match event {
            Event::Start(start) | Event::Empty(start) if root.is_some() => {
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                return Err(fail(
                    &known,
                    before,
                    Some(&name),
                    "a second root element after the document ended".into(),
                ));
            }
            Event::Start(start) => {
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                if stack.len() >= limits.xml_depth {
                    return Err(fail(&known, before, Some(&name), too_deep()));
                }
                stack.push((
                    Element {
                        name,
                        line: lines.line_of(before as usize + 1),
                        ..Element::default()
                    },
                    before as usize,
                ));
            }
            Event::Empty(start) => {
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                if stack.len() >= limits.xml_depth {
                    return Err(fail(&known, before, Some(&name), too_deep()));
                }
                known.insert(name.clone());
                let element = Element {
                    name,
                    line: lines.line_of(before as usize + 1),
                    bytes: (reader.buffer_position() - before) as usize,
                    ..Element::default()
                };
                match stack.last_mut() {
                    Some((parent, _)) => parent.children.push(element),
                    None => root = Some(element),
                }
            }
            Event::End(_) => {
                // quick-xml has already checked that the name matches the open element.
                let Some((mut done, from)) = stack.pop() else {
                    return Err(fail(
                        &known,
                        before,
                        None,
                        "closing tag without an open element".into(),
                    ));
                };
                done.bytes = reader.buffer_position() as usize - from;
                if !known.contains(&done.name) {
                    known.insert(done.name.clone());
                }
                if !done.children.is_empty() && !done.text.trim().is_empty() {
                    warnings.push(format!(
                        "{file} line {}: stray text inside <{}> ignored",
                        done.text_line, done.name
                    ));
                    done.text.clear();
                }
                match stack.last_mut() {
                    Some((parent, _)) => parent.children.push(done),
                    None => root = Some(done),
                }
            }
            Event::Text(t) => {
                let s = t.decode().map_err(|e| {
                    fail(
                        &known,
                        before,
                        open_name(&stack).as_deref(),
                        describe(&e.into()),
                    )
                })?;
                match stack.last_mut() {
                    // Indentation between child elements is layout, not text.
                    Some((open, _)) if !open.children.is_empty() && s.trim().is_empty() => {}
                    // Checked before it is copied into the tree.
                    Some((open, _)) if open.text.len() + s.len() > limits.field_bytes => {
                        return Err(fail(&known, before, Some(&open.name), too_long()));
                    }
                    Some((open, _)) => {
                        if open.text_line == 0 && !s.trim().is_empty() {
                            let lead = s.len() - s.trim_start().len();
                            open.text_line = lines.line_of(before as usize + lead);
                        }
                        open.text.push_str(&s)
                    }
                    None if s.trim().is_empty() => {}
                    None => {
                        return Err(fail(
                            &known,
                            before,
                            None,
                            "text outside the root element".into(),
                        ))
                    }
                }
            }
            Event::CData(c) => {
                let s = c.decode().map_err(|e| {
                    fail(
                        &known,
                        before,
                        open_name(&stack).as_deref(),
                        describe(&e.into()),
                    )
                })?;
                if let Some((open, _)) = stack.last_mut() {
                    open.text.push_str(&s);
                }
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => {
                        let name = r
                            .decode()
                            .map_err(|e| fail(&known, before, None, describe(&e.into())))?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .map(String::from)
                            .ok_or_else(|| {
                                fail(
                                    &known,
                                    before,
                                    open_name(&stack).as_deref(),
                                    "an entity reference that is not one of XML's own".into(),
                                )
                            })?
                    }
                };
                if let Some((open, _)) = stack.last_mut() {
                    open.text.push_str(&resolved);
                }
            }
            Event::Eof => {
                if let Some((open, _)) = stack.last() {
                    let named = known.contains(&open.name);
                    return Err(ImportError::Malformed {
                        file: file.to_string(),
                        line: lines.count(),
                        at: named.then(|| format!("<{}>", open.name)),
                        reason: format!(
                            "the file ends inside {} opened on line {}: truncated?",
                            if named {
                                format!("<{}>", open.name)
                            } else {
                                "an element".into()
                            },
                            open.line
                        ),
                    });
                }
                return root.ok_or_else(|| ImportError::Malformed {
                    file: file.to_string(),
                    line: 1,
                    at: None,
                    reason: "no root element: empty file?".into(),
                });
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
        if let Some((open, _)) = stack.last() {
            if open.text.len() > limits.field_bytes {
                return Err(fail(&known, before, Some(&open.name), too_long()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_lines_and_stray_text() {
        let doc = "<?xml version='1.0'?>\n<A>\n  <B>x &amp; y</B>stray\n  <C/>\n</A>\n";
        let mut warnings = Vec::new();
        let a = parse("f.xml", doc, &Limits::default(), &mut warnings).unwrap();
        assert_eq!(a.name, "A");
        assert_eq!(a.line, 2);
        let b = a.child("b").unwrap();
        assert_eq!((b.text.as_str(), b.line), ("x & y", 3));
        assert_eq!(a.child("C").unwrap().line, 4);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0], "f.xml line 3: stray text inside <A> ignored");
    }

    #[test]
    fn truncated_and_mismatched_are_located() {
        let (l, mut w) = (Limits::default(), Vec::new());
        let e = parse("f.xml", "<A>\n<B>\n<C>1</C>\n", &l, &mut w).unwrap_err();
        assert!(
            e.to_string()
                .ends_with(": the file ends inside an element opened on line 2: truncated?"),
            "{e}"
        );
        let e = parse("f.xml", "<A>\n<B/>\n<B>\n<C>1</C>\n", &l, &mut w).unwrap_err();
        assert!(
            e.to_string().contains("ends inside <B> opened on line 3"),
            "{e}"
        );
        let e = parse("f.xml", "<A>\n<B>1</C>\n</A>", &l, &mut w).unwrap_err();
        match e {
            ImportError::Malformed { line, .. } => assert_eq!(line, 2),
            other => panic!("{other}"),
        }
        assert!(parse("f.xml", "", &l, &mut w).is_err());
        assert!(parse("f.xml", "<A/>trailing", &l, &mut w).is_err());
    }

    #[test]
    fn deep_nesting_is_refused_not_recursed_into() {
        // A 60,000-deep document overflowed the stack when its tree was dropped.
        let depth = 60_000;
        let doc = format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
        let e = parse("deep.xml", &doc, &Limits::default(), &mut Vec::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "deep.xml line 1: elements nested more than 32 deep (limits.xml_depth)"
        );
        let shallow = Limits {
            xml_depth: 2,
            ..Limits::default()
        };
        assert!(parse("f.xml", "<a><b/></a>", &shallow, &mut Vec::new()).is_ok());
        assert!(parse("f.xml", "<a><b><c/></b></a>", &shallow, &mut Vec::new()).is_err());
    }

    #[test]
    fn long_text_and_large_records_are_refused_by_their_limits() {
        let limits = Limits {
            field_bytes: 8,
            record_bytes: 40,
            ..Limits::default()
        };
        let doc = "<A>\n  <C>1</C>\n  <B>12345678</B>\n  <C>123456789</C>\n</A>";
        let e = parse("f.xml", doc, &limits, &mut Vec::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "f.xml line 4 <C>: text over the limit of 8 bytes (limits.field_bytes)"
        );
        let doc = "<A>\n  <R><B>1234</B></R>\n  <R><B>1234</B><B>1234</B><B>1234</B><B>1234</B></R>\n</A>";
        let a = parse("f.xml", doc, &limits, &mut Vec::new()).unwrap();
        let records: Vec<_> = a.all("R").collect();
        assert!(records[0].record_within("f.xml", &limits).is_ok());
        let e = records[1].record_within("f.xml", &limits).unwrap_err();
        assert_eq!(
            e.to_string(),
            "f.xml line 3 <R>: record of 51 bytes, over the limit of 40 bytes (limits.record_bytes)"
        );
    }

    #[test]
    fn messages_quote_nothing_from_the_document() {
        let (l, mut w) = (Limits::default(), Vec::new());
        for doc in [
            "<A><B>Jane Doe</C></A>",
            "<A>x</A>Jane Doe",
            "<A>&JaneDoe;</A>",
            "<A>&#xZZJane;</A>",
            // A start tag's `>` lost: the value runs into the element's name.
            "<A><B>x</B><Surname6Jane Doe</Surname></A>",
            "<A><B>x</B><Surname.Jane</Surname></A>",
            "<A><B>1</B>Jane Doe, 12 Secret Lane<C/></A>",
        ] {
            let message = match parse("f.xml", doc, &l, &mut w) {
                Ok(_) => w.join("; "),
                Err(e) => e.to_string(),
            };
            assert!(message.starts_with("f.xml line 1"), "{message}");
            assert!(
                !message.contains("Jane") && !message.contains("Doe"),
                "{message}"
            );
        }
    }
}
