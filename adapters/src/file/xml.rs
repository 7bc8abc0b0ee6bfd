//! A small element tree over `quick-xml`, with the line each element starts on.
//!
//! The returns are a few hundred kilobytes, and every format is read by looking elements up by
//! name wherever a version put them, so a tree is simpler and safer than a streaming state
//! machine per format. Names compare without case and without namespace prefix: versions differ
//! in both (`CINdetails`/`CINDetails`, `ctf:Pupil`).

use quick_xml::events::Event;
use quick_xml::Reader;

use super::{ImportError, Lines};

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
    pub fn error(&self, file: &str, reason: String) -> ImportError {
        ImportError::Malformed {
            file: file.to_string(),
            line: self.line,
            at: Some(format!("<{}>", self.name)),
            reason,
        }
    }

    /// The text of the first descendant of these names, read with one of the `values` readers;
    /// an unreadable value is an error at that element.
    pub fn parse_of<T>(
        &self,
        file: &str,
        names: &[&str],
        read: impl Fn(&str) -> Result<T, String>,
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

/// Parses a whole document. Mismatched or unclosed tags, text after the root and undecodable
/// bytes are errors naming the line. Text between the child elements of a container (which no
/// format defines) is not an error: it is ignored and reported in `warnings`, so the import
/// report shows it.
pub fn parse(file: &str, text: &str, warnings: &mut Vec<String>) -> Result<Element, ImportError> {
    let lines = Lines::new(text);
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let fail = |pos: u64, element: Option<&str>, reason: String| ImportError::Malformed {
        file: file.to_string(),
        line: lines.line_of(pos as usize),
        at: element.map(|e| format!("<{e}>")),
        reason,
    };
    loop {
        let before = reader.buffer_position();
        let event = match reader.read_event() {
            Ok(e) => e,
            Err(e) => {
                let open = stack.last().map(|e| e.name.clone());
                return Err(fail(
                    reader.error_position(),
                    open.as_deref(),
                    e.to_string(),
                ));
            }
        };
        match event {
            Event::Start(start) | Event::Empty(start) if root.is_some() => {
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                return Err(fail(
                    before,
                    Some(&name),
                    "a second root element after the document ended".into(),
                ));
            }
            Event::Start(start) => {
                stack.push(Element {
                    name: String::from_utf8_lossy(start.local_name().as_ref()).into_owned(),
                    line: lines.line_of(before as usize + 1),
                    ..Element::default()
                });
            }
            Event::Empty(start) => {
                let element = Element {
                    name: String::from_utf8_lossy(start.local_name().as_ref()).into_owned(),
                    line: lines.line_of(before as usize + 1),
                    ..Element::default()
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => root = Some(element),
                }
            }
            Event::End(_) => {
                // quick-xml has already checked that the name matches the open element.
                let Some(mut done) = stack.pop() else {
                    return Err(fail(
                        before,
                        None,
                        "closing tag without an open element".into(),
                    ));
                };
                if !done.children.is_empty() && !done.text.trim().is_empty() {
                    warnings.push(format!(
                        "{file} line {}: stray text {:?} inside <{}> ignored",
                        done.text_line,
                        done.text.trim(),
                        done.name
                    ));
                    done.text.clear();
                }
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => root = Some(done),
                }
            }
            Event::Text(t) => {
                let s = t.decode().map_err(|e| {
                    fail(before, stack.last().map(|e| e.name.as_str()), e.to_string())
                })?;
                match stack.last_mut() {
                    Some(open) => {
                        if open.text_line == 0 && !s.trim().is_empty() {
                            let lead = s.len() - s.trim_start().len();
                            open.text_line = lines.line_of(before as usize + lead);
                        }
                        open.text.push_str(&s)
                    }
                    None if s.trim().is_empty() => {}
                    None => {
                        return Err(fail(
                            before,
                            None,
                            format!("text {:?} outside the root element", s.trim()),
                        ))
                    }
                }
            }
            Event::CData(c) => {
                let s = c.decode().map_err(|e| {
                    fail(before, stack.last().map(|e| e.name.as_str()), e.to_string())
                })?;
                if let Some(open) = stack.last_mut() {
                    open.text.push_str(&s);
                }
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => {
                        let name = r.decode().map_err(|e| fail(before, None, e.to_string()))?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .map(String::from)
                            .ok_or_else(|| fail(before, None, format!("unknown entity &{name};")))?
                    }
                };
                if let Some(open) = stack.last_mut() {
                    open.text.push_str(&resolved);
                }
            }
            Event::Eof => {
                if let Some(open) = stack.last() {
                    return Err(ImportError::Malformed {
                        file: file.to_string(),
                        line: lines.count(),
                        at: Some(format!("<{}>", open.name)),
                        reason: format!(
                            "the file ends inside <{}> opened on line {}: truncated?",
                            open.name, open.line
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_lines_and_stray_text() {
        let doc = "<?xml version='1.0'?>\n<A>\n  <B>x &amp; y</B>stray\n  <C/>\n</A>\n";
        let mut warnings = Vec::new();
        let a = parse("f.xml", doc, &mut warnings).unwrap();
        assert_eq!(a.name, "A");
        assert_eq!(a.line, 2);
        let b = a.child("b").unwrap();
        assert_eq!((b.text.as_str(), b.line), ("x & y", 3));
        assert_eq!(a.child("C").unwrap().line, 4);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("stray"));
    }

    #[test]
    fn truncated_and_mismatched_are_located() {
        let mut w = Vec::new();
        let e = parse("f.xml", "<A>\n<B>\n<C>1</C>\n", &mut w).unwrap_err();
        assert!(
            e.to_string().contains("ends inside <B> opened on line 2"),
            "{e}"
        );
        let e = parse("f.xml", "<A>\n<B>1</C>\n</A>", &mut w).unwrap_err();
        match e {
            ImportError::Malformed { line, .. } => assert_eq!(line, 2),
            other => panic!("{other}"),
        }
        assert!(parse("f.xml", "", &mut w).is_err());
        assert!(parse("f.xml", "<A/>trailing", &mut w).is_err());
    }
}
