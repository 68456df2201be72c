//! The bottom layer: gob's integer, float and string encodings, a bounds
//! checked reader over one message, and message framing.

use super::GobError;

/// Appends `x` as a gob unsigned integer: one byte if below 128, otherwise
/// the negated byte count followed by the minimal big-endian bytes.
pub(crate) fn put_uint(out: &mut Vec<u8>, x: u64) {
    if x < 0x80 {
        out.push(x as u8);
        return;
    }
    let bytes = x.to_be_bytes();
    let skip = (x.leading_zeros() / 8) as usize;
    let n = bytes.len() - skip;
    out.push((n as u8).wrapping_neg());
    out.extend_from_slice(bytes.get(skip..).unwrap_or_default());
}

/// Appends `i` as a gob signed integer: the value shifted left by one, with
/// bit 0 saying "complement the rest".
pub(crate) fn put_int(out: &mut Vec<u8>, i: i64) {
    let u = if i < 0 { (!(i as u64) << 1) | 1 } else { (i as u64) << 1 };
    put_uint(out, u);
}

/// Appends `f` as gob does: the IEEE-754 bits of the float64, byte-reversed,
/// as an unsigned integer (so 17.0 is `FE 31 40`).
pub(crate) fn put_float(out: &mut Vec<u8>, f: f64) {
    put_uint(out, f.to_bits().swap_bytes());
}

/// Appends a byte count and the bytes (strings and `[]byte`).
pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Decodes a gob unsigned integer at the start of `buf`: `Ok(None)` if `buf`
/// is too short to hold it, otherwise the value and the bytes it took.
fn uint_prefix(buf: &[u8]) -> Result<Option<(u64, usize)>, GobError> {
    let Some(&first) = buf.first() else { return Ok(None) };
    if first < 0x80 {
        return Ok(Some((u64::from(first), 1)));
    }
    let n = usize::from(first.wrapping_neg());
    if n > 8 {
        return Err(GobError::BadUint(first));
    }
    let Some(digits) = buf.get(1..=n) else { return Ok(None) };
    let x = digits.iter().fold(0u64, |x, &b| (x << 8) | u64::from(b));
    Ok(Some((x, n + 1)))
}

/// The frame of the next gob message in `buf`: `Ok(None)` if more bytes are
/// needed to know (or to hold) it, otherwise `(header_len, body_len)` where
/// the body is `buf[header_len..header_len + body_len]`. A byte count above
/// `max` is an error before anything is allocated for it, as is an empty
/// message (every message starts with a type id).
pub fn message_len(buf: &[u8], max: usize) -> Result<Option<(usize, usize)>, GobError> {
    match message_head(buf, max)? {
        Some((header, body)) if buf.len() - header >= body => Ok(Some((header, body))),
        _ => Ok(None),
    }
}

/// The frame of the message starting `buf`, as [`message_len`], as soon as
/// its byte count is there (the body may not be): `(header_len, body_len)`.
pub(crate) fn message_head(buf: &[u8], max: usize) -> Result<Option<(usize, usize)>, GobError> {
    let Some((len, header)) = uint_prefix(buf)? else { return Ok(None) };
    if len > max as u64 {
        return Err(GobError::MessageTooBig { len, max });
    }
    if len == 0 {
        return Err(GobError::Corrupt("empty message (no type id)".into()));
    }
    // len <= max, so it fits in usize.
    Ok(Some((header, len as usize)))
}

/// The type id at the start of a message body, once the bytes of it are
/// there: `Ok(None)` while `body` (what has arrived of it) is too short.
pub(crate) fn type_id_prefix(body: &[u8]) -> Result<Option<i64>, GobError> {
    Ok(uint_prefix(body)?.map(|(u, _)| {
        let i = (u >> 1) as i64;
        if u & 1 == 1 {
            !i
        } else {
            i
        }
    }))
}

/// Appends `body` to `out` as one framed message.
pub(crate) fn put_message(out: &mut Vec<u8>, body: &[u8], max: usize) -> Result<(), GobError> {
    if body.len() > max {
        return Err(GobError::MessageTooBig { len: body.len() as u64, max });
    }
    put_uint(out, body.len() as u64);
    out.extend_from_slice(body);
    Ok(())
}

/// A bounds-checked cursor over one message body.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'de> {
    buf: &'de [u8],
}

impl<'de> Reader<'de> {
    pub(crate) fn new(buf: &'de [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'de [u8] {
        self.buf
    }

    /// Reads an unsigned integer; `what` names it in the error.
    pub(crate) fn uint(&mut self, what: &'static str) -> Result<u64, GobError> {
        let (x, n) = uint_prefix(self.buf)?.ok_or(GobError::Truncated(what))?;
        self.buf = self.buf.get(n..).unwrap_or_default();
        Ok(x)
    }

    pub(crate) fn int(&mut self, what: &'static str) -> Result<i64, GobError> {
        let u = self.uint(what)?;
        let i = (u >> 1) as i64;
        Ok(if u & 1 == 1 { !i } else { i })
    }

    pub(crate) fn float(&mut self, what: &'static str) -> Result<f64, GobError> {
        Ok(f64::from_bits(self.uint(what)?.swap_bytes()))
    }

    /// A count of things that follow, each taking at least `min_size` bytes:
    /// a count the rest of the message cannot hold is corrupt, so nobody
    /// allocates for it.
    pub(crate) fn count(&mut self, what: &'static str, min_size: usize) -> Result<usize, GobError> {
        let n = self.uint(what)?;
        let fits = usize::try_from(n).ok().filter(|&n| n.saturating_mul(min_size) <= self.remaining());
        fits.ok_or_else(|| {
            GobError::Corrupt(format!("{what} of {n} does not fit in the {} bytes left", self.remaining()))
        })
    }

    /// A byte count and that many bytes.
    pub(crate) fn bytes(&mut self, what: &'static str) -> Result<&'de [u8], GobError> {
        let n = self.uint(what)?;
        let n = usize::try_from(n).ok().filter(|&n| n <= self.buf.len()).ok_or(GobError::Truncated(what))?;
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uint(x: u64) -> Vec<u8> {
        let mut v = Vec::new();
        put_uint(&mut v, x);
        v
    }

    fn int(i: i64) -> Vec<u8> {
        let mut v = Vec::new();
        put_int(&mut v, i);
        v
    }

    /// The examples of the encoding/gob package documentation.
    #[test]
    fn documented_examples() {
        assert_eq!(uint(0), [0x00]);
        assert_eq!(uint(7), [0x07]);
        assert_eq!(uint(256), [0xFE, 0x01, 0x00]);
        assert_eq!(int(-129), [0xFE, 0x01, 0x01]);
        assert_eq!(int(-65), [0xFF, 0x81]);
        assert_eq!(int(65), [0xFF, 0x82]);
        let mut v = Vec::new();
        put_float(&mut v, 17.0);
        assert_eq!(v, [0xFE, 0x31, 0x40]);
        assert_eq!(uint(u64::MAX), [0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
    }

    #[test]
    fn reader_round_trips_extremes() {
        for x in [0, 1, 127, 128, 255, 256, 1 << 32, u64::MAX] {
            assert_eq!(Reader::new(&uint(x)).uint("x"), Ok(x));
        }
        for i in [0, 1, -1, 63, -64, 64, -65, i64::MIN, i64::MAX] {
            assert_eq!(Reader::new(&int(i)).int("i"), Ok(i));
        }
    }

    #[test]
    fn framing() {
        assert_eq!(message_len(&[], 100), Ok(None));
        assert_eq!(message_len(&[3, 1, 2], 100), Ok(None));
        assert_eq!(message_len(&[3, 1, 2, 3, 9], 100), Ok(Some((1, 3))));
        assert_eq!(message_len(&[0xFE, 0x01], 1000), Ok(None));
        assert_eq!(message_len(&[0xFE, 0x01, 0x00], 1000), Ok(None));
        assert!(matches!(message_len(&[0xFE, 0x01, 0x01], 100), Err(GobError::MessageTooBig { len: 257, max: 100 })));
        assert_eq!(message_len(&[0x80], 100), Err(GobError::BadUint(0x80)));
        assert!(matches!(message_len(&[0], 100), Err(GobError::Corrupt(_))));
    }
}
