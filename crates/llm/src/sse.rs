//! Server-sent events parsed incrementally, as the bytes arrive: events split across network
//! chunks, `\n`, `\r\n` or `\r` line ends, multi-line `data`, comments and a leading BOM are
//! all handled as the WHATWG event-stream rules say. Providers only see whole events.

/// One dispatched event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` field; empty when the server sent none (the spec's `message`).
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// The largest event we hold while it is incomplete; a server sending more without a line end
/// is broken, and we would rather say so than grow without bound.
pub(crate) const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Default)]
pub(crate) struct SseParser {
    /// Bytes of the line not yet ended.
    line: Vec<u8>,
    event: String,
    data: String,
    has_data: bool,
    /// The last line ended with `\r`; a `\n` starting the next chunk belongs to it.
    skip_lf: bool,
    /// Past the first line (where a BOM may sit).
    started: bool,
}

impl SseParser {
    /// Feeds bytes; complete events are appended to `out`. Errs when one event grows past
    /// [`MAX_EVENT_BYTES`].
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), String> {
        if self.skip_lf && !bytes.is_empty() {
            if bytes[0] == b'\n' {
                bytes = &bytes[1..];
            }
            self.skip_lf = false;
        }
        while let Some(i) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&bytes[..i]);
            let line = std::mem::take(&mut self.line);
            self.on_line(&line, out);
            let ended_with_cr = bytes[i] == b'\r';
            bytes = &bytes[i + 1..];
            if ended_with_cr {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
        }
        self.line.extend_from_slice(bytes);
        if self.line.len() + self.data.len() > MAX_EVENT_BYTES {
            return Err(format!(
                "an event larger than {} MiB without an end",
                MAX_EVENT_BYTES / (1024 * 1024)
            ));
        }
        Ok(())
    }

    /// The body ended: a last line without its line end, and an event without its blank line,
    /// are still delivered (servers that close right after `data: [DONE]` are common).
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.on_line(&line, out);
        }
        self.dispatch(out);
    }

    fn on_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        let mut line = line;
        if !self.started {
            self.started = true;
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return; // a comment (keep-alives are sent as comments)
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            b"event" => self.event = value.into_owned(),
            // `id` and `retry` serve reconnecting browsers; a model answer is never resumed.
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = std::mem::take(&mut self.event);
        if std::mem::take(&mut self.has_data) {
            out.push(SseEvent {
                event,
                data: std::mem::take(&mut self.data),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(text: &[u8], piece: usize) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for chunk in text.chunks(piece) {
            p.push(chunk, &mut out).unwrap();
        }
        p.finish(&mut out);
        out
    }

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn same_events_whatever_the_chunking_and_line_ends() {
        let lf = "\u{feff}: hello\n\nevent: message_start\ndata: {\"a\":1}\n\ndata: x\ndata:  y\ndata\n\n: ping\nid: 7\nretry: 10\ndata: [DONE]\n\n";
        let expected = vec![
            ev("message_start", "{\"a\":1}"),
            ev("", "x\n y\n"),
            ev("", "[DONE]"),
        ];
        for text in [
            lf.to_string(),
            lf.replace('\n', "\r\n"),
            lf.replace('\n', "\r"),
        ] {
            for piece in 1..=text.len() {
                assert_eq!(
                    parse_in_pieces(text.as_bytes(), piece),
                    expected,
                    "pieces of {piece} bytes of {text:?}"
                );
            }
        }
    }

    #[test]
    fn multibyte_text_split_inside_a_character_survives() {
        let text = "data: {\"t\":\"héllo ✓\"}\n\n".as_bytes();
        for piece in 1..text.len() {
            assert_eq!(
                parse_in_pieces(text, piece),
                vec![ev("", "{\"t\":\"héllo ✓\"}")]
            );
        }
    }

    #[test]
    fn a_last_event_without_blank_line_is_delivered_and_blank_events_are_not() {
        assert_eq!(parse_in_pieces(b"data: [DONE]", 4), vec![ev("", "[DONE]")]);
        assert_eq!(parse_in_pieces(b"event: ping\n\n\n\n", 3), vec![]);
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        let big = vec![b'x'; 1024 * 1024];
        let mut failed = None;
        for _ in 0..20 {
            if let Err(e) = p.push(&big, &mut out) {
                failed = Some(e);
                break;
            }
        }
        assert!(failed.unwrap().contains("16 MiB"));
    }
}
