//! A small YAML tree that remembers where each node, key and value starts.
//!
//! `saphyr-parser` hands out events with spans; this module folds them into [`Node`]s so the
//! loader can name the line and column of every key and value, including after `${VAR}`
//! substitution (which runs on the parsed values, not on the text).

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, StrInput};

/// Deeper nesting than this is refused (the format needs seven levels).
pub(crate) const MAX_DEPTH: usize = 16;
/// More nodes than this (aliases included) are refused, so an alias bomb cannot exhaust
/// memory.
pub(crate) const MAX_NODES: usize = 100_000;
/// More entries than this in one mapping or list are refused.
pub(crate) const MAX_ENTRIES: usize = 1_000;
/// A longer text value (or key) is refused.
pub(crate) const MAX_SCALAR_BYTES: usize = 16 * 1024;
/// More text than this in all (copies made by aliases included) is refused.
const MAX_TOTAL_BYTES: usize = 4 * 1024 * 1024;

/// A position in the file: line and column, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub(crate) line: usize,
    pub(crate) column: usize,
}

impl Pos {
    fn of(span: &Span) -> Self {
        Pos {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

/// A node and where it starts.
#[derive(Clone)]
pub(crate) struct Node {
    pub(crate) pos: Pos,
    pub(crate) value: Value,
}

/// What a node holds.
#[derive(Clone)]
pub(crate) enum Value {
    /// Text; `plain` when it was written without quotes or block markers (only a plain
    /// scalar can be `null` or empty-as-null).
    Scalar { text: String, plain: bool },
    /// A list.
    Seq(Vec<Node>),
    /// A mapping, entries in file order (duplicates kept: the loader reports them).
    Map(Vec<(Key, Node)>),
}

/// A mapping key and where it starts.
#[derive(Clone)]
pub(crate) struct Key {
    pub(crate) text: String,
    pub(crate) pos: Pos,
}

impl Node {
    /// Whether the node is YAML's null (`~`, `null`, or nothing at all).
    pub(crate) fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// What kind of node this is, for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        if self.is_null() {
            return "nothing";
        }
        match self.value {
            Value::Scalar { .. } => "text",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// The file is not YAML this loader takes.
#[derive(Debug)]
pub(crate) struct SyntaxError {
    pub(crate) pos: Pos,
    pub(crate) message: String,
    /// A size bound was passed (the YAML itself may be fine).
    pub(crate) too_large: bool,
}

impl SyntaxError {
    fn at(span: &Span, message: impl Into<String>) -> Self {
        SyntaxError {
            pos: Pos::of(span),
            message: message.into(),
            too_large: false,
        }
    }

    fn too_large(span: &Span, message: impl Into<String>) -> Self {
        SyntaxError {
            too_large: true,
            ..SyntaxError::at(span, message)
        }
    }
}

/// Parses one YAML document; `None` when the text holds none (empty, or only comments).
///
/// Every position is within the text: the parser places some marks past its end (an error
/// at the end of the stream, an empty explicit key), which point at the text's end instead.
pub(crate) fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let last = position_of(text, text.len());
    let mut builder = Builder {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        nodes: 0,
        bytes: 0,
        last,
    };
    builder.document().map_err(|mut e| {
        e.pos = clamp(e.pos, last);
        e
    })
}

fn clamp(pos: Pos, last: Pos) -> Pos {
    if (pos.line, pos.column) > (last.line, last.column) {
        last
    } else {
        pos
    }
}

/// The line and column of a byte offset (counting characters; `\r\n`, `\r` and `\n`
/// each end a line, as in YAML).
pub(crate) fn position_of(text: &str, offset: usize) -> Pos {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + before.matches('\r').count()
        - before.matches("\r\n").count()
        + 1;
    let line_start = before.rfind(['\n', '\r']).map_or(0, |at| at + 1);
    Pos {
        line,
        column: before[line_start..].chars().count() + 1,
    }
}

struct Builder<'a> {
    parser: Parser<'a, StrInput<'a>>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    bytes: usize,
    /// The position of the text's end.
    last: Pos,
}

impl<'a> Builder<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), SyntaxError> {
        match self.parser.next_event() {
            Some(Ok(event)) => Ok(event),
            Some(Err(e)) => Err(SyntaxError {
                pos: Pos {
                    line: e.marker().line(),
                    column: e.marker().col() + 1,
                },
                message: e.info().to_owned(),
                too_large: false,
            }),
            // The parser ends every stream with `StreamEnd`; running out means it stopped
            // early, which only a malformed input can cause.
            None => Err(SyntaxError {
                pos: Pos { line: 1, column: 1 },
                message: "the YAML ends unexpectedly".to_owned(),
                too_large: false,
            }),
        }
    }

    fn document(&mut self) -> Result<Option<Node>, SyntaxError> {
        let mut root = None;
        loop {
            let (event, span) = self.next()?;
            match event {
                Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
                Event::StreamEnd => return Ok(root),
                Event::DocumentStart(_) if root.is_some() => {
                    return Err(SyntaxError::at(
                        &span,
                        "a second YAML document (`---`); the file must hold one",
                    ));
                }
                Event::DocumentStart(_) => {
                    let (event, span) = self.next()?;
                    root = Some(self.node(event, span, 0)?);
                }
                _ => return Err(SyntaxError::at(&span, "unexpected YAML structure")),
            }
        }
    }

    fn node(&mut self, event: Event<'a>, span: Span, depth: usize) -> Result<Node, SyntaxError> {
        if depth > MAX_DEPTH {
            return Err(SyntaxError::too_large(
                &span,
                format!("nested too deeply (more than {MAX_DEPTH} levels)"),
            ));
        }
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(SyntaxError::too_large(
                &span,
                format!("too many values (more than {MAX_NODES}, aliases included)"),
            ));
        }
        let pos = self.at(&span);
        let (node, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                check_tag(tag.as_deref(), &span)?;
                self.text(&text, &span)?;
                let value = Value::Scalar {
                    text: text.into_owned(),
                    plain: style == ScalarStyle::Plain,
                };
                (Node { pos, value }, anchor)
            }
            Event::SequenceStart(anchor, tag) => {
                check_tag(tag.as_deref(), &span)?;
                let mut items = Vec::new();
                loop {
                    let (event, span) = self.next()?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    if items.len() == MAX_ENTRIES {
                        return Err(SyntaxError::too_large(
                            &span,
                            format!("a list with more than {MAX_ENTRIES} items"),
                        ));
                    }
                    items.push(self.node(event, span, depth + 1)?);
                }
                let value = Value::Seq(items);
                (Node { pos, value }, anchor)
            }
            Event::MappingStart(anchor, tag) => {
                check_tag(tag.as_deref(), &span)?;
                let mut entries = Vec::new();
                loop {
                    let (event, span) = self.next()?;
                    if entries.len() == MAX_ENTRIES && !matches!(event, Event::MappingEnd) {
                        return Err(SyntaxError::too_large(
                            &span,
                            format!("a mapping with more than {MAX_ENTRIES} keys"),
                        ));
                    }
                    let key = match event {
                        Event::MappingEnd => break,
                        Event::Scalar(text, ..) => {
                            self.text(&text, &span)?;
                            Key {
                                text: text.into_owned(),
                                pos: self.at(&span),
                            }
                        }
                        Event::Alias(_) => {
                            return Err(SyntaxError::at(&span, "an alias cannot be a key"));
                        }
                        _ => {
                            return Err(SyntaxError::at(&span, "a key must be text"));
                        }
                    };
                    let (event, span) = self.next()?;
                    let mut value = self.node(event, span, depth + 1)?;
                    if matches!(&value.value, Value::Scalar { text, plain: true } if text.is_empty())
                    {
                        // Nothing after the colon: point at the key, not past it.
                        value.pos = key.pos;
                    }
                    entries.push((key, value));
                }
                let value = Value::Map(entries);
                (Node { pos, value }, anchor)
            }
            Event::Alias(id) => {
                let Some(node) = self.anchors.get(&id) else {
                    return Err(SyntaxError::at(&span, "an alias to an unknown anchor"));
                };
                let (nodes, bytes) = size(node);
                self.nodes += nodes;
                self.bytes += bytes;
                if self.nodes > MAX_NODES {
                    return Err(SyntaxError::too_large(
                        &span,
                        format!("too many values (more than {MAX_NODES}, aliases included)"),
                    ));
                }
                if self.bytes > MAX_TOTAL_BYTES {
                    return Err(SyntaxError::too_large(
                        &span,
                        "too much text (aliases included)",
                    ));
                }
                return Ok(node.clone());
            }
            _ => return Err(SyntaxError::at(&span, "unexpected YAML structure")),
        };
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }
}

/// Core-schema tags (`!!str`) are accepted and ignored; others have no meaning here.
fn check_tag(tag: Option<&saphyr_parser::Tag>, span: &Span) -> Result<(), SyntaxError> {
    match tag {
        Some(tag) if !tag.is_yaml_core_schema() => Err(SyntaxError::at(
            span,
            format!("the tag `{tag}` is not supported"),
        )),
        _ => Ok(()),
    }
}

/// How many nodes a tree holds, and how many bytes of text.
fn size(node: &Node) -> (usize, usize) {
    match &node.value {
        Value::Scalar { text, .. } => (1, text.len()),
        Value::Seq(items) => items
            .iter()
            .map(size)
            .fold((1, 0), |(n, b), (m, c)| (n + m, b + c)),
        Value::Map(entries) => entries.iter().fold((1, 0), |(n, b), (k, v)| {
            let (m, c) = size(v);
            (n + m, b + c + k.text.len())
        }),
    }
}

impl Builder<'_> {
    /// Where a span starts, never past the text's end.
    fn at(&self, span: &Span) -> Pos {
        clamp(Pos::of(span), self.last)
    }

    /// Counts a text value (or key), refusing one that is too long.
    fn text(&mut self, text: &str, span: &Span) -> Result<(), SyntaxError> {
        if text.len() > MAX_SCALAR_BYTES {
            return Err(SyntaxError::too_large(
                span,
                format!("a value longer than {} KiB", MAX_SCALAR_BYTES / 1024),
            ));
        }
        self.bytes += text.len();
        if self.bytes > MAX_TOTAL_BYTES {
            return Err(SyntaxError::too_large(
                span,
                "too much text (aliases included)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(node: &Node) -> (usize, usize) {
        (node.pos.line, node.pos.column)
    }

    #[test]
    fn keys_and_values_know_their_line_and_column() {
        let root = parse("a:\n  b: [x, 'y']\n  c: { d: e }\n")
            .unwrap()
            .unwrap();
        let Value::Map(top) = &root.value else {
            panic!()
        };
        assert_eq!((top[0].0.pos.line, top[0].0.pos.column), (1, 1));
        let Value::Map(inner) = &top[0].1.value else {
            panic!()
        };
        assert_eq!((inner[0].0.pos.line, inner[0].0.pos.column), (2, 3));
        let Value::Seq(items) = &inner[0].1.value else {
            panic!()
        };
        assert_eq!(at(&items[0]), (2, 7));
        assert_eq!(at(&items[1]), (2, 10));
        assert!(matches!(
            &items[1].value,
            Value::Scalar { plain: false, .. }
        ));
        let Value::Map(flow) = &inner[1].1.value else {
            panic!()
        };
        assert_eq!(at(&flow[0].1), (3, 11));
    }

    #[test]
    fn empty_text_is_no_document_and_nulls_are_recognised() {
        assert!(parse("").unwrap().is_none());
        assert!(parse("# only a comment\n").unwrap().is_none());
        let root = parse("a:\nb: ~\nc: 'null'\n").unwrap().unwrap();
        let Value::Map(entries) = &root.value else {
            panic!()
        };
        assert!(entries[0].1.is_null());
        assert!(entries[1].1.is_null());
        assert!(!entries[2].1.is_null());
    }

    #[test]
    fn aliases_copy_their_anchor_and_bombs_are_refused() {
        let root = parse("a: &x [1, 2]\nb: *x\n").unwrap().unwrap();
        let Value::Map(entries) = &root.value else {
            panic!()
        };
        assert!(matches!(&entries[1].1.value, Value::Seq(items) if items.len() == 2));

        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = parse(&bomb).err().unwrap();
        assert!(err.message.contains("too many"), "{}", err.message);
    }

    #[test]
    fn syntax_errors_second_documents_and_tags_have_positions() {
        let err = parse("a: [1, 2\n").err().unwrap();
        assert!(err.pos.line >= 1);
        let err = parse("a: 1\n---\nb: 2\n").err().unwrap();
        assert_eq!(err.pos.line, 2);
        let err = parse("a: !custom x\n").err().unwrap();
        assert_eq!((err.pos.line, err.pos.column), (1, 4));
        assert!(parse("a: !!str 2.11\n").is_ok());
        let deep = format!("a: {}{}\n", "[".repeat(100), "]".repeat(100));
        assert!(parse(&deep).err().unwrap().message.contains("deeply"));
    }
}
