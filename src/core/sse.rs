//! Incremental Server-Sent Events decoder.
//!
//! Pure and linear: bytes go in as they arrive from the socket, split anywhere (inside a field
//! name, between `\r` and `\n`, inside a multi-byte character), and complete events come out
//! through a callback that borrows the decoder's buffers — no allocation per event once the
//! buffers have grown to the largest event. Each input byte is scanned once.
//!
//! What it accepts, following the WHATWG event-stream grammar: `\n`, `\r\n` and lone `\r` line
//! ends; comment lines (`: keep-alive`); `data`, `event`, `id`, `retry` fields, with one optional
//! space after the colon; several `data` lines joined by `\n`; unknown fields. One extension:
//! an `error` field line (older llama.cpp servers report in-stream errors that way) is surfaced
//! as an event whose `event` is `error`.

/// One dispatched event. `event` is empty when the stream named none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    pub event: &'a [u8],
    pub data: &'a [u8],
}

impl SseEvent<'_> {
    /// The OpenAI-style end-of-stream sentinel `data: [DONE]`.
    pub fn is_done(&self) -> bool {
        self.data == b"[DONE]"
    }
}

/// Incremental decoder; feed it reads in order, then call [`SseDecoder::finish`].
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes of the current, not yet terminated line.
    line: Vec<u8>,
    /// The previous input ended with `\r`: a `\n` at the start of the next input belongs to it.
    after_cr: bool,
    data: Vec<u8>,
    event: Vec<u8>,
    /// A `data` field was seen since the last dispatch (an empty `data:` still makes an event).
    has_data: bool,
    /// Bytes that were not part of any recognised field (lines without a known field name).
    unknown_lines: u64,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one read. Calls `on_event` for every event the read completes.
    pub fn feed(&mut self, mut input: &[u8], on_event: &mut impl FnMut(SseEvent<'_>)) {
        if self.after_cr && !input.is_empty() {
            self.after_cr = false;
            if let Some(rest) = input.strip_prefix(b"\n") {
                input = rest;
            }
        }
        while let Some(pos) = input.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (head, rest) = input.split_at(pos);
            let terminator = rest[0];
            input = &rest[1..];
            if terminator == b'\r' {
                match input.first() {
                    Some(b'\n') => input = &input[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            if self.line.is_empty() {
                self.process_line(head, on_event);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(head);
                self.process_line(&line, on_event);
                line.clear();
                self.line = line;
            }
        }
        self.line.extend_from_slice(input);
    }

    /// Ends the stream. A final event that lacked its blank line is still dispatched (servers
    /// that close right after the last `data:` line are common). Returns the number of bytes of
    /// an unterminated trailing line that was not a field, which callers may treat as garbage.
    pub fn finish(&mut self, on_event: &mut impl FnMut(SseEvent<'_>)) -> usize {
        let mut leftover = 0;
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            let known = self.process_line(&line, on_event);
            if !known {
                leftover = line.len();
            }
        }
        self.dispatch(on_event);
        leftover
    }

    /// Lines that carried no recognised field so far (a hint that the body is not SSE).
    pub fn unknown_lines(&self) -> u64 {
        self.unknown_lines
    }

    /// Returns whether the line was a blank line, a comment or a known field.
    fn process_line(&mut self, line: &[u8], on_event: &mut impl FnMut(SseEvent<'_>)) -> bool {
        if line.is_empty() {
            self.dispatch(on_event);
            return true;
        }
        if line[0] == b':' {
            return true;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            b"error" => {
                // Not standard SSE: surface it as its own error event right away.
                self.dispatch(on_event);
                on_event(SseEvent {
                    event: b"error",
                    data: value,
                });
            }
            b"id" | b"retry" => {}
            _ => {
                self.unknown_lines += 1;
                return false;
            }
        }
        true
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(SseEvent<'_>)) {
        if self.has_data {
            on_event(SseEvent {
                event: &self.event,
                data: &self.data,
            });
        }
        self.data.clear();
        self.event.clear();
        self.has_data = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// (event, data) pairs, owned, for comparisons.
    fn decode_split(input: &[u8], splits: &[usize]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut push = |e: SseEvent<'_>| {
            out.push((
                String::from_utf8_lossy(e.event).into_owned(),
                String::from_utf8_lossy(e.data).into_owned(),
            ))
        };
        let mut d = SseDecoder::new();
        let mut start = 0;
        for &s in splits {
            d.feed(&input[start..s], &mut push);
            start = s;
        }
        d.feed(&input[start..], &mut push);
        d.finish(&mut push);
        out
    }

    fn decode(input: &[u8]) -> Vec<(String, String)> {
        decode_split(input, &[])
    }

    fn ev(event: &str, data: &str) -> (String, String) {
        (event.to_string(), data.to_string())
    }

    #[rstest]
    #[case::lf(b"data: a\n\ndata: b\n\n", vec![ev("", "a"), ev("", "b")])]
    #[case::crlf(b"data: a\r\n\r\ndata: b\r\n\r\n", vec![ev("", "a"), ev("", "b")])]
    #[case::cr(b"data: a\r\rdata: b\r\r", vec![ev("", "a"), ev("", "b")])]
    #[case::no_space(b"data:a\n\n", vec![ev("", "a")])]
    #[case::two_spaces_keep_one(b"data:  a\n\n", vec![ev("", " a")])]
    #[case::multiline(b"data: a\ndata: b\n\n", vec![ev("", "a\nb")])]
    #[case::comment(b": keep-alive\n\ndata: x\n\n", vec![ev("", "x")])]
    #[case::named(b"event: error\ndata: {}\n\n", vec![ev("error", "{}")])]
    #[case::id_retry(b"id: 7\nretry: 10\ndata: x\n\n", vec![ev("", "x")])]
    #[case::empty_data(b"data:\n\n", vec![ev("", "")])]
    #[case::blank_only(b"\n\n\n", vec![])]
    #[case::unterminated_last(b"data: a\n\ndata: [DONE]", vec![ev("", "a"), ev("", "[DONE]")])]
    #[case::error_field(b"error: boom\n\n", vec![ev("error", "boom")])]
    #[case::unknown_field(b"foo: bar\ndata: x\n\n", vec![ev("", "x")])]
    fn decodes(#[case] input: &[u8], #[case] expected: Vec<(String, String)>) {
        assert_eq!(decode(input), expected);
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let input: &[u8] = b"data: {\"a\":1}\r\n\r\n: ping\r\nevent: x\r\ndata: l1\r\ndata: l2\r\n\r\ndata: [DONE]\r\n\r\n";
        let whole = decode(input);
        assert_eq!(whole.len(), 3);
        for i in 0..=input.len() {
            assert_eq!(decode_split(input, &[i]), whole, "split at {i}");
            for j in i..=input.len() {
                assert_eq!(decode_split(input, &[i, j]), whole, "split at {i},{j}");
            }
        }
    }

    #[test]
    fn one_byte_reads_match_one_read() {
        let mut input = Vec::new();
        for i in 0..200 {
            input.extend_from_slice(format!("data: {{\"i\":{i},\"t\":\"é\"}}\r\n\r\n").as_bytes());
        }
        let splits: Vec<usize> = (1..input.len()).collect();
        assert_eq!(decode_split(&input, &splits), decode(&input));
    }

    /// Pseudo-random split points over many seeds (a property test without a framework: the
    /// generator is a fixed xorshift, so failures are reproducible from the printed seed).
    #[test]
    fn arbitrary_splits_property() {
        let mut input = Vec::new();
        for i in 0..50 {
            let sep: &[u8] = match i % 3 {
                0 => b"\n",
                1 => b"\r\n",
                _ => b"\r",
            };
            input.extend_from_slice(format!("data: chunk {i}").as_bytes());
            input.extend_from_slice(sep);
            if i % 7 == 0 {
                input.extend_from_slice(b": comment");
                input.extend_from_slice(sep);
            }
            input.extend_from_slice(sep);
        }
        let whole = decode(&input);
        assert_eq!(whole.len(), 50);
        for seed in 1..300u64 {
            let mut x = seed;
            let mut splits = Vec::new();
            let mut at = 0;
            loop {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                at += (x % 9) as usize + 1;
                if at >= input.len() {
                    break;
                }
                splits.push(at);
            }
            assert_eq!(decode_split(&input, &splits), whole, "seed {seed}");
        }
    }

    #[test]
    fn non_sse_body_is_visible() {
        let mut d = SseDecoder::new();
        let mut n = 0;
        d.feed(b"<html>\nnot an event stream\n", &mut |_| n += 1);
        let leftover = d.finish(&mut |_| n += 1);
        assert_eq!(n, 0);
        assert_eq!(d.unknown_lines(), 2);
        assert_eq!(leftover, 0);
        let mut d = SseDecoder::new();
        d.feed(b"{\"error\": 1}", &mut |_| n += 1);
        assert_eq!(d.finish(&mut |_| n += 1), 12);
    }
}
