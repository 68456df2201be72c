//! Where a JSON-RPC request (one top-level JSON object) ends, in input
//! that arrives in pieces: [`JsonScan`] carries on from where the last read
//! left off, so no byte is looked at twice and a request costs the same
//! however it is cut up; the full parse (serde_json) then runs once, on a
//! whole request. (The HTTP row's head scanner, `head_end` in
//! `server/http.rs`, works the same way.)

/// Deepest nesting [`JsonScan`] follows: serde_json refuses deeper values
/// (its recursion limit is 128), so nothing legitimate is lost.
const MAX_DEPTH: u32 = 128;

/// Finds the end of the JSON object at the start of a buffer that grows
/// between calls, looking only at bytes it has not seen.
///
/// It follows just enough of JSON to know where the object ends: strings
/// (and their escapes, so a quoted `}` or `\"` is not structure) and the
/// nesting of objects and arrays. Whatever cannot be part of a JSON object
/// (a first byte other than `{`, a byte no JSON token has outside a string,
/// a control character inside one, a `]` closing an object, nesting past
/// 128 levels) is an error as soon as it arrives, so garbage is not
/// buffered up to the size limit. Everything else (what a token spells,
/// commas and colons in the right places) is left to the parse of the whole
/// value.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct JsonScan {
    /// Bytes of the buffer looked at so far.
    pos: usize,
    /// Objects and arrays open at `pos`.
    depth: u32,
    /// Bit `i`: whether the container at depth `i + 1` is an array.
    arrays: u128,
    /// Whether `pos` is inside a string.
    in_string: bool,
    /// Whether the byte at `pos` is escaped (follows a backslash in a string).
    escaped: bool,
}

impl JsonScan {
    /// Whether no byte has been looked at yet (whitespace before the value
    /// may still be dropped).
    pub(super) fn is_fresh(&self) -> bool {
        self.pos == 0
    }

    /// Bytes looked at so far.
    #[cfg(test)]
    pub(super) fn scanned(&self) -> usize {
        self.pos
    }

    /// Looks at what `buf` holds past the bytes seen by earlier calls.
    /// `buf` is the same buffer each time, grown at its end, and starts
    /// with the value (the caller drops whitespace before it). `Ok(Some(end))`:
    /// the object is `buf[..end]` (start afresh for the next one);
    /// `Ok(None)`: not whole yet. An error says what is wrong and where.
    pub(super) fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, String> {
        let mut pos = self.pos;
        let end = loop {
            let Some(&b) = buf.get(pos) else { break None };
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                    pos += 1;
                    continue;
                }
                // The next byte that means something inside a string.
                let rest = buf.get(pos..).unwrap_or_default();
                let Some(at) = rest.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20) else {
                    pos = buf.len();
                    break None;
                };
                pos += at;
                match rest[at] {
                    b'"' => self.in_string = false,
                    b'\\' => self.escaped = true,
                    c => return Err(format!("control character {c:#04x} in a string at byte {pos}")),
                }
                pos += 1;
                continue;
            }
            if self.depth == 0 && b != b'{' {
                return Err(format!(
                    "a JSON-RPC message is a JSON object, and this one starts with {:?}",
                    char::from(b)
                ));
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    if self.depth == MAX_DEPTH {
                        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
                    }
                    let bit = 1u128 << self.depth;
                    if b == b'[' {
                        self.arrays |= bit;
                    } else {
                        self.arrays &= !bit;
                    }
                    self.depth += 1;
                }
                b'}' | b']' => {
                    self.depth -= 1; // depth > 0 here: at depth 0 only `{` passes
                    let in_array = self.arrays & (1u128 << self.depth) != 0;
                    if in_array != (b == b']') {
                        let (closer, open) = if in_array { ('}', "an array") } else { (']', "an object") };
                        return Err(format!("{closer:?} closes {open} at byte {pos}"));
                    }
                    if self.depth == 0 {
                        break Some(pos + 1);
                    }
                }
                b' ' | b'\t' | b'\n' | b'\r' | b':' | b',' => {}
                // Numbers, and the letters of true, false and null.
                b'0'..=b'9' | b'-' | b'+' | b'.' | b'E' => {}
                b'a' | b'e' | b'f' | b'l' | b'n' | b'r' | b's' | b't' | b'u' => {}
                other => {
                    return Err(format!("unexpected {:?} at byte {pos}", char::from(other)));
                }
            }
            pos += 1;
        };
        match end {
            Some(end) => {
                *self = JsonScan::default();
                Ok(Some(end))
            }
            None => {
                self.pos = pos;
                Ok(None)
            }
        }
    }
}

/// How many bytes of JSON whitespace `buf` starts with.
pub(crate) fn leading_whitespace(buf: &[u8]) -> usize {
    buf.iter().position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')).unwrap_or(buf.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The outcome of scanning `input` whole.
    fn whole(input: &[u8]) -> Result<Option<usize>, String> {
        JsonScan::default().scan(input)
    }

    /// Scans `input` as if it arrived in two reads, split at `at`.
    fn split(input: &[u8], at: usize) -> Result<Option<usize>, String> {
        let mut scan = JsonScan::default();
        match scan.scan(&input[..at])? {
            Some(end) => Ok(Some(end)),
            None => scan.scan(input),
        }
    }

    const SAMPLES: &[&[u8]] = &[
        br#"{"method":"Arith.Multiply","params":[{"A":7,"B":8}],"id":0}"#,
        br#"{"method":"Echo.Text","params":["a \"quoted\" } and { and ] and [ and \\"],"id":"x"}"#,
        br#"{"a":{"b":[1,2,{"c":[true,false,null,-1.5e+3]}]},"d":"\u00e9\\\"","e":[]}"#,
        b"{ \"spaced\" :\n [ 1 ,\t2 ]\r\n}",
        r#"{"unicode":"héllo wörld ✓","n":1}"#.as_bytes(),
        // Whole, with the start of the next request behind it.
        br#"{"id":1}{"id":2}"#,
        // Not whole.
        br#"{"method":"Arith.Multiply","params":[{"A":7"#,
        br#"{"s":"ends in an escape \"#,
        // Garbage, at different depths.
        b"[1,2]",
        b"hello",
        br#"{"a": @}"#,
        br#"{"a":[1}"#,
        br#"{"a":{"b":1]]"#,
        b"{\"a\":\"a\x01b\"}",
    ];

    #[test]
    fn splitting_at_any_byte_gives_what_the_whole_input_gives() {
        for &input in SAMPLES {
            let expected = whole(input);
            for at in 0..=input.len() {
                let got = split(input, at);
                // An error is the same error, found no later than in the
                // whole input.
                assert_eq!(got, expected, "{:?} split at {at}", String::from_utf8_lossy(input));
            }
        }
    }

    #[test]
    fn a_byte_at_a_time_looks_at_each_byte_once() {
        for &input in SAMPLES {
            let expected = whole(input);
            let mut scan = JsonScan::default();
            let mut got = Ok(None);
            for n in 1..=input.len() {
                got = scan.scan(&input[..n]);
                match &got {
                    Ok(None) => assert_eq!(scan.scanned(), n, "each call looks only at the new byte"),
                    _ => break,
                }
            }
            assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn whole_objects_end_at_their_closing_brace() {
        let request = SAMPLES[0];
        assert_eq!(whole(request), Ok(Some(request.len())));
        let two = br#"{"id":1}{"id":2}"#;
        assert_eq!(whole(two), Ok(Some(8)));
        assert_eq!(whole(&two[8..]), Ok(Some(8)));
        // Braces and brackets inside strings, escaped quotes and backslashes.
        let tricky = SAMPLES[1];
        assert_eq!(whole(tricky), Ok(Some(tricky.len())));
        assert!(serde_json::from_slice::<serde_json::Value>(tricky).is_ok());
        assert_eq!(whole(br#"{"s":"\\"}"#), Ok(Some(10)), "an escaped backslash does not escape the quote");
        assert_eq!(whole(br#"{"s":"\"}"#), Ok(None), "an escaped quote does not end the string");
    }

    #[test]
    fn nesting_is_followed_to_128_levels() {
        let deep = |n: usize| {
            let mut v = b"{\"a\":".to_vec();
            v.extend(std::iter::repeat_n(b'[', n - 1));
            v.extend(std::iter::repeat_n(b']', n - 1));
            v.push(b'}');
            v
        };
        let ok = deep(128);
        assert_eq!(whole(&ok), Ok(Some(ok.len())));
        let err = whole(&deep(129)).expect_err("too deep");
        assert!(err.contains("deeper than 128"), "{err}");
    }

    #[test]
    fn garbage_is_an_error_at_once() {
        // Each is refused at its first wrong byte, however much follows.
        let cases: [(&[u8], &str); 6] = [
            (b"[1,2]", "starts with '['"),
            (b"hello", "starts with 'h'"),
            (b"{\"a\": @", "unexpected '@' at byte 6"),
            (b"{\"a\":[1}", "'}' closes an array at byte 7"),
            (b"{\"a\":{\"b\":1]", "']' closes an object at byte 11"),
            (b"{\"a\":\"x\x00", "control character 0x00 in a string at byte 7"),
        ];
        for (input, why) in cases {
            let err = whole(input).expect_err("garbage");
            assert!(err.contains(why), "{:?}: {err}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn whitespace_before_a_request_is_counted() {
        assert_eq!(leading_whitespace(b" \n\r\t{"), 4);
        assert_eq!(leading_whitespace(b"\n\n"), 2);
        assert_eq!(leading_whitespace(b"{}"), 0);
    }
}
