//! The chunked transfer coding (RFC 9112 §7.1): a strict incremental decoder and the encoder.
//!
//! Pure code: no I/O. The decoder is a byte-level state machine, O(n) in its input, with no
//! allocation at all; body data is never copied, only reported as a range of the input.
//!
//! ```text
//! chunked-body   = *chunk last-chunk trailer-section CRLF
//! chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//! chunk-size     = 1*HEXDIG
//! last-chunk     = 1*("0") [ chunk-ext ] CRLF
//! chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//! chunk-ext-val  = token / quoted-string
//! trailer-section = *( field-line CRLF )
//! ```
//!
//! Strictness is deliberate: a proxy and the server behind it disagreeing on where a chunk
//! ends is request smuggling, so everything the grammar does not allow is an error (a bare
//! LF, a CR without LF, whitespace that is not BWS, a missing CRLF after data), and lines
//! have length limits so a peer cannot keep us reading framing forever.

use std::ops::{Deref, Range};

use crate::http::token::is_tchar;

/// More hex digits than this cannot be a u64 chunk size (leading zeros included: a 17-digit
/// size line is never legitimate).
const MAX_SIZE_DIGITS: u8 = 16;

/// Limit on the chunk-ext bytes of one chunk line (everything between the size and the CRLF).
/// Extensions are ignored, so there is no reason to accept many of them.
pub const MAX_EXT_BYTES: usize = 1024;

/// Limit on the trailer section, final CRLF included. Trailers are read and discarded.
pub const MAX_TRAILER_BYTES: usize = 8 * 1024;

/// The end of a chunked body without trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// What ends every chunk's data (for callers writing header, data and CRLF as separate slices).
pub const CRLF: &[u8] = b"\r\n";

/// The result of one [`ChunkedDecoder::decode`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// How many input bytes this call used (framing and data).
    pub consumed: usize,
    /// Body data found in this call, as a range of the input (`0..0` when none). Always ends
    /// at `consumed` when non-empty: a call returns at most one run of data, and stops right
    /// after it.
    pub data: Range<usize>,
    /// The last chunk, trailers and final CRLF are consumed: the message is complete.
    pub done: bool,
}

/// Why a chunked body is refused. The connection must be closed: its framing is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ChunkError {}

const NOT_HEX: ChunkError = ChunkError("chunk size is not hex");
const OVERFLOW: ChunkError = ChunkError("chunk size overflows");
const BARE_LF: ChunkError = ChunkError("bare LF in chunked framing");
const CR_NO_LF: ChunkError = ChunkError("CR not followed by LF in chunked framing");
const BAD_EXT: ChunkError = ChunkError("invalid chunk extension");
const EXT_TOO_LONG: ChunkError = ChunkError("chunk extension too long");
const DATA_NO_CRLF: ChunkError = ChunkError("chunk data not followed by CRLF");
const BAD_TRAILER_NAME: ChunkError = ChunkError("invalid trailer field name");
const BAD_TRAILER_VALUE: ChunkError = ChunkError("invalid trailer field value");
const TRAILER_TOO_LARGE: ChunkError = ChunkError("trailer section too large");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Start of a chunk line: the first hex digit.
    SizeStart,
    /// In the hex digits.
    Size,
    /// BWS before a `;` (after the size or after a complete extension).
    ExtBws,
    /// After `;`: BWS, then the first tchar of a name.
    ExtNameStart,
    /// In an extension name.
    ExtName,
    /// BWS after a name: only `=` or `;` may follow.
    ExtAfterName,
    /// After `=`: BWS, then a token or a quoted-string.
    ExtValueStart,
    /// In a token value.
    ExtValueToken,
    /// Inside a quoted-string value.
    ExtQuoted,
    /// After a backslash inside a quoted-string.
    ExtQuotedEscape,
    /// After the closing quote.
    ExtQuotedEnd,
    /// CR ending the chunk line seen.
    LineLf,
    /// In chunk data; `remaining` bytes to go (> 0).
    Data,
    /// Chunk data complete: CR expected.
    DataCr,
    /// Chunk data complete: LF expected.
    DataLf,
    /// Start of a trailer line, or the final CRLF.
    TrailerStart,
    /// In a trailer field name.
    TrailerName,
    /// In a trailer field value (after the colon).
    TrailerValue,
    /// CR ending a trailer line seen.
    TrailerLf,
    /// CR of the final (empty) line seen.
    EndLf,
    /// The message is complete.
    Done,
    /// A previous call failed; every later call fails the same way.
    Failed(ChunkError),
}

/// Incremental, strict decoder of a chunked body (RFC 9112 §7.1). Input arrives in arbitrary
/// pieces; the decoder keeps only a few integers between calls.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// While reading the size: the size so far; in data: the bytes still to come.
    size: u64,
    /// Hex digits of the current size line.
    digits: u8,
    /// chunk-ext bytes on the current line.
    ext_bytes: usize,
    /// Bytes of the trailer section so far.
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder positioned before the first chunk-size.
    pub fn new() -> Self {
        Self {
            state: State::SizeStart,
            size: 0,
            digits: 0,
            ext_bytes: 0,
            trailer_bytes: 0,
        }
    }

    #[cfg_attr(
        not(any(test, fuzzing)),
        expect(
            dead_code,
            reason = "the fuzz targets use it (fuzz/src/lib.rs compiles this file)"
        )
    )]
    /// The whole body, trailers and final CRLF have been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes from `input` until it ends, the message ends, or one run of data is found.
    /// Ok with consumed == 0 and !done only when input is empty. Bytes after the end of the
    /// message are not consumed (they belong to the next message on the connection).
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Data => {
                    // Bulk path: the data run is reported, not copied or scanned.
                    let available = input.len() - i;
                    let n = usize::try_from(self.size).map_or(available, |s| s.min(available));
                    self.size -= n as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Decoded {
                        consumed: i + n,
                        data: i..i + n,
                        done: false,
                    });
                }
                State::Done => break,
                State::Failed(e) => return Err(e),
                _ => {
                    let b = input[i];
                    i += 1;
                    if let Err(e) = self.step(b) {
                        self.state = State::Failed(e);
                        return Err(e);
                    }
                }
            }
        }
        if let State::Failed(e) = self.state {
            return Err(e);
        }
        Ok(Decoded {
            consumed: i,
            data: 0..0,
            done: self.state == State::Done,
        })
    }

    /// One framing byte (every state except Data, Done and Failed).
    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        use State::*;
        // RFC 9112 §7.1: every line of the chunked framing ends in CRLF. A lone LF is the
        // classic smuggling vector (peers that accept it disagree with peers that do not),
        // so it is an error in every state where it could be a line end.
        // (After chunk data the more specific "not followed by CRLF" is reported instead.)
        if b == b'\n' && !matches!(self.state, LineLf | DataCr | DataLf | TrailerLf | EndLf) {
            return Err(BARE_LF);
        }
        if self.in_trailers() {
            self.trailer_bytes += 1;
            if self.trailer_bytes > MAX_TRAILER_BYTES {
                return Err(TRAILER_TOO_LARGE);
            }
        }
        self.state = match (self.state, b) {
            // chunk-size = 1*HEXDIG (RFC 9112 §7.1): no leading whitespace, sign or "0x".
            (SizeStart, _) => {
                let d = hex_value(b).ok_or(NOT_HEX)?;
                self.size = u64::from(d);
                self.digits = 1;
                self.ext_bytes = 0;
                Size
            }
            (Size, _) if b.is_ascii_hexdigit() => {
                self.digits += 1;
                // 16 hex digits always fit in u64, so the digit limit is the overflow check.
                if self.digits > MAX_SIZE_DIGITS {
                    return Err(OVERFLOW);
                }
                self.size = (self.size << 4) | u64::from(hex_value(b).unwrap_or(0));
                Size
            }
            (Size | ExtName | ExtValueToken | ExtQuotedEnd, b'\r') => LineLf,
            (Size, b' ' | b'\t') => ExtBws,
            (Size, b';') => ExtNameStart,
            (Size, _) => return Err(NOT_HEX),

            // chunk-ext (RFC 9112 §7.1.1), BWS (RFC 9110 §5.6.3) only where the grammar has it.
            (ExtBws, b' ' | b'\t') => ExtBws,
            (ExtBws, b';') => ExtNameStart,
            (ExtNameStart, b' ' | b'\t') => ExtNameStart,
            (ExtNameStart, _) if is_tchar(b) => ExtName,
            (ExtName, _) if is_tchar(b) => ExtName,
            (ExtName, b' ' | b'\t') => ExtAfterName,
            (ExtName | ExtAfterName, b'=') => ExtValueStart,
            (ExtName | ExtAfterName | ExtValueToken | ExtQuotedEnd, b';') => ExtNameStart,
            (ExtAfterName, b' ' | b'\t') => ExtAfterName,
            (ExtValueStart, b' ' | b'\t') => ExtValueStart,
            (ExtValueStart, b'"') => ExtQuoted,
            (ExtValueStart | ExtValueToken, _) if is_tchar(b) => ExtValueToken,
            (ExtValueToken | ExtQuotedEnd, b' ' | b'\t') => ExtBws,
            // quoted-string (RFC 9110 §5.6.4): qdtext / quoted-pair; no CR or LF inside.
            (ExtQuoted, b'"') => ExtQuotedEnd,
            (ExtQuoted, b'\\') => ExtQuotedEscape,
            (ExtQuoted, _) if is_qdtext(b) => ExtQuoted,
            (ExtQuotedEscape, _) if is_field_vchar_or_ws(b) => ExtQuoted,
            (
                ExtBws | ExtNameStart | ExtName | ExtAfterName | ExtValueStart | ExtValueToken
                | ExtQuoted | ExtQuotedEscape | ExtQuotedEnd,
                _,
            ) => return Err(BAD_EXT),

            (LineLf, b'\n') if self.size == 0 => {
                // last-chunk: the trailer section follows.
                self.trailer_bytes = 0;
                TrailerStart
            }
            (LineLf, b'\n') => Data,
            (TrailerLf, b'\n') => TrailerStart,
            (EndLf, b'\n') => Done,
            (LineLf | TrailerLf | EndLf, _) => return Err(CR_NO_LF),

            // RFC 9112 §7.1: chunk-data is followed by CRLF, exactly.
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => SizeStart,
            (DataCr | DataLf, _) => return Err(DATA_NO_CRLF),

            // trailer-section = *( field-line CRLF ), then CRLF (RFC 9112 §7.1.2). Field lines
            // are `field-name ":" OWS field-value OWS` (RFC 9112 §5); a line starting with
            // whitespace would be obs-fold, which is not allowed here either.
            (TrailerStart, b'\r') => EndLf,
            (TrailerStart | TrailerName, _) if is_tchar(b) => TrailerName,
            (TrailerName, b':') => TrailerValue,
            (TrailerStart | TrailerName, _) => return Err(BAD_TRAILER_NAME),
            (TrailerValue, b'\r') => TrailerLf,
            // RFC 9110 §5.5: field values are VCHAR / obs-text / SP / HTAB; no other CTL.
            (TrailerValue, _) if is_field_vchar_or_ws(b) => TrailerValue,
            (TrailerValue, _) => return Err(BAD_TRAILER_VALUE),

            (Data | Done | Failed(_), _) => unreachable!("handled by decode"),
        };
        // Every byte that lands in the extension part of a chunk line counts (the `;` or BWS
        // that starts it included, the CRLF not).
        if self.in_extension() {
            self.ext_bytes += 1;
            if self.ext_bytes > MAX_EXT_BYTES {
                return Err(EXT_TOO_LONG);
            }
        }
        Ok(())
    }

    fn in_extension(&self) -> bool {
        use State::*;
        matches!(
            self.state,
            ExtBws
                | ExtNameStart
                | ExtName
                | ExtAfterName
                | ExtValueStart
                | ExtValueToken
                | ExtQuoted
                | ExtQuotedEscape
                | ExtQuotedEnd
        )
    }

    fn in_trailers(&self) -> bool {
        use State::*;
        matches!(
            self.state,
            TrailerStart | TrailerName | TrailerValue | TrailerLf | EndLf
        )
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// qdtext (RFC 9110 §5.6.4): HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text.
fn is_qdtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5B | 0x5D..=0x7E | 0x80..=0xFF)
}

/// HTAB / SP / VCHAR / obs-text: field-value bytes (RFC 9110 §5.5) and quoted-pair targets.
fn is_field_vchar_or_ws(b: u8) -> bool {
    matches!(b, b'\t' | b' '..=0x7E | 0x80..=0xFF)
}

#[cfg_attr(
    not(any(test, fuzzing)),
    expect(
        dead_code,
        reason = "the fuzz targets use it (fuzz/src/lib.rs compiles this file)"
    )
)]
/// Writes one chunk: `{len:x}\r\n{data}\r\n` (nothing when data is empty: an empty chunk
/// would be the last-chunk, RFC 9112 §7.1).
pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let header = chunk_header(data.len());
    out.reserve(header.len() + data.len() + CRLF.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    out.extend_from_slice(CRLF);
}

/// The chunk header for `len` bytes of data: `{len:x}\r\n` (lowercase hex, no leading zeros),
/// on the stack, for vectored writes of header, data and [`CRLF`]. `len == 0` gives `0\r\n`,
/// the start of the last chunk; use [`LAST_CHUNK`] to end a body.
pub fn chunk_header(len: usize) -> ChunkHeader {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 18];
    let mut n = len as u64;
    // Digits are produced least significant first at the end of a scratch area, then moved.
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = HEX[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    let count = digits.len() - at;
    buf[..count].copy_from_slice(&digits[at..]);
    buf[count..count + 2].copy_from_slice(CRLF);
    ChunkHeader {
        buf,
        len: (count + 2) as u8,
    }
}

/// A chunk header (`{len:x}\r\n`) held inline; derefs to its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkHeader {
    buf: [u8; 18],
    len: u8,
}

impl ChunkHeader {
    /// `{len:x}\r\n`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

impl AsRef<[u8]> for ChunkHeader {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Deref for ChunkHeader {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` in order, collecting data; returns (data, bytes consumed, done).
    fn run(pieces: &[&[u8]]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut data = Vec::new();
        let mut consumed = 0;
        for piece in pieces {
            let mut at = 0;
            loop {
                let r = d.decode(&piece[at..])?;
                if !r.data.is_empty() {
                    assert_eq!(r.data.end, r.consumed, "data ends at consumed");
                    data.extend_from_slice(&piece[at..][r.data.clone()]);
                }
                at += r.consumed;
                consumed += r.consumed;
                assert_eq!(r.done, d.is_done());
                if r.done || at == piece.len() {
                    break;
                }
                assert!(r.consumed > 0, "progress on non-empty input");
            }
        }
        Ok((data, consumed, d.is_done()))
    }

    fn decode_all(body: &[u8]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        run(&[body])
    }

    fn error(body: &[u8]) -> &'static str {
        match decode_all(body) {
            Err(ChunkError(e)) => e,
            Ok(r) => panic!("{:?} decoded: {r:?}", String::from_utf8_lossy(body)),
        }
    }

    const BODY: &[u8] = b"5;name=val\r\nhello\r\n10 ; a = \"q \\\" ;\" ; b\r\n0123456789abcdef\r\n1\r\n!\r\n000\r\nExpires: never\r\nX-T:\r\n\r\n";
    const BODY_DATA: &[u8] = b"hello0123456789abcdef!";

    #[test]
    fn decodes_a_chunked_body_rfc9112_7_1() {
        let (data, consumed, done) = decode_all(BODY).unwrap();
        assert_eq!(data, BODY_DATA);
        assert_eq!(consumed, BODY.len());
        assert!(done);
    }

    #[test]
    fn split_at_every_boundary_gives_the_same_data_rfc9112_7_1() {
        for split in 0..=BODY.len() {
            let (a, b) = BODY.split_at(split);
            let (data, consumed, done) = run(&[a, b]).unwrap();
            assert_eq!(data, BODY_DATA, "split at {split}");
            assert_eq!(consumed, BODY.len());
            assert!(done);
        }
        // Every pair of split points (three pieces).
        for i in 0..=BODY.len() {
            for j in i..=BODY.len() {
                let (data, _, done) = run(&[&BODY[..i], &BODY[i..j], &BODY[j..]]).unwrap();
                assert_eq!(data, BODY_DATA, "split at {i}, {j}");
                assert!(done);
            }
        }
    }

    #[test]
    fn one_byte_at_a_time_rfc9112_7_1() {
        let pieces: Vec<&[u8]> = BODY.chunks(1).collect();
        let (data, consumed, done) = run(&pieces).unwrap();
        assert_eq!(data, BODY_DATA);
        assert_eq!(consumed, BODY.len());
        assert!(done);
    }

    #[test]
    fn errors_are_found_at_every_split_rfc9112_7_1() {
        let bad = b"5\r\nhello\r\n3\nabc\r\n0\r\n\r\n";
        for split in 0..=bad.len() {
            let (a, b) = bad.split_at(split);
            assert_eq!(run(&[a, b]).unwrap_err(), BARE_LF, "split at {split}");
        }
    }

    #[test]
    fn chunk_of_0x10_split_across_calls_rfc9112_7_1() {
        let mut d = ChunkedDecoder::new();
        let r = d.decode(b"10\r\n0123456").unwrap();
        assert_eq!(
            r,
            Decoded {
                consumed: 11,
                data: 4..11,
                done: false
            }
        );
        let r = d.decode(b"789abcdef\r\n0\r\n\r\n").unwrap();
        assert_eq!(
            r,
            Decoded {
                consumed: 9,
                data: 0..9,
                done: false
            }
        );
        let r = d.decode(b"\r\n0\r\n\r\n").unwrap();
        assert_eq!(
            r,
            Decoded {
                consumed: 7,
                data: 0..0,
                done: true
            }
        );
    }

    #[test]
    fn one_run_of_data_per_call() {
        let mut d = ChunkedDecoder::new();
        let input = b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n";
        let r = d.decode(input).unwrap();
        assert_eq!((r.consumed, r.data.clone(), r.done), (5, 3..5, false));
        let r = d.decode(&input[5..]).unwrap();
        assert_eq!((r.consumed, r.data.clone(), r.done), (7, 5..7, false));
        let r = d.decode(&input[12..]).unwrap();
        assert_eq!((r.consumed, r.data, r.done), (7, 0..0, true));
    }

    #[test]
    fn empty_input_consumes_nothing() {
        let mut d = ChunkedDecoder::default();
        assert_eq!(
            d.decode(b"").unwrap(),
            Decoded {
                consumed: 0,
                data: 0..0,
                done: false
            }
        );
        assert!(!d.is_done());
    }

    #[test]
    fn bytes_after_the_end_are_not_consumed_rfc9112_9_3_2() {
        let mut d = ChunkedDecoder::new();
        let input = b"0\r\n\r\nGET / HTTP/1.1\r\n";
        let r = d.decode(input).unwrap();
        assert_eq!((r.consumed, r.done), (5, true));
        // Once done, nothing more is consumed.
        let r = d.decode(&input[5..]).unwrap();
        assert_eq!((r.consumed, r.data, r.done), (0, 0..0, true));
    }

    #[test]
    fn hex_sizes_and_leading_zeros_rfc9112_7_1() {
        assert_eq!(
            decode_all(b"000a\r\n0123456789\r\n0\r\n\r\n")
                .unwrap()
                .0
                .len(),
            10
        );
        assert_eq!(
            decode_all(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap().0.len(),
            10
        );
        assert_eq!(
            decode_all(b"1F\r\n0123456789012345678901234567890\r\n0\r\n\r\n")
                .unwrap()
                .0
                .len(),
            31
        );
        // Several zeros as the last chunk: 1*("0").
        assert!(decode_all(b"0000\r\n\r\n").unwrap().2);
    }

    #[test]
    fn chunk_size_must_be_hex_rfc9112_7_1() {
        for bad in [
            &b" 5\r\nhello\r\n0\r\n\r\n"[..],
            b"\t5\r\nhello\r\n",
            b"+5\r\nhello\r\n",
            b"-5\r\nhello\r\n",
            b"0x5\r\nhello\r\n",
            b"5g\r\nhello\r\n",
            b"\r\n",
            b"g\r\n",
            b";ext\r\n",
        ] {
            assert_eq!(error(bad), NOT_HEX.0, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn chunk_size_overflow_rfc9112_7_1() {
        // 16 digits fit in u64 (the decoder then waits for the data).
        let mut d = ChunkedDecoder::new();
        let r = d.decode(b"ffffffffffffffff\r\nab").unwrap();
        assert_eq!(r.data, 18..20);
        // 17 digits do not, even with leading zeros.
        assert_eq!(error(b"10000000000000000\r\n"), OVERFLOW.0);
        assert_eq!(error(b"00000000000000001\r\n"), OVERFLOW.0);
    }

    #[test]
    fn chunk_extensions_are_ignored_rfc9112_7_1_1() {
        for ext in [
            &b";a"[..],
            b";a=b",
            b"; a = b",
            b" ;a",
            b"\t;\ta\t=\tb",
            b";a=\"quoted ;,= value\"",
            b";a=\"esc \\\" \\\\\"",
            b";a;b=c;d=\"e\"",
            b";a=\"\"",
            b";a ;b",
            b";a=b ;c",
            b";a=\"x\" ;c",
        ] {
            let mut body = b"3".to_vec();
            body.extend_from_slice(ext);
            body.extend_from_slice(b"\r\nabc\r\n0");
            body.extend_from_slice(ext);
            body.extend_from_slice(b"\r\n\r\n");
            let (data, _, done) = decode_all(&body)
                .unwrap_or_else(|e| panic!("{:?}: {e:?}", String::from_utf8_lossy(ext)));
            assert_eq!(data, b"abc");
            assert!(done);
        }
    }

    #[test]
    fn malformed_chunk_extensions_refused_rfc9112_7_1_1() {
        for ext in [
            &b" "[..],    // BWS not followed by ';'
            b";",         // no name
            b"; ",        // no name
            b";a=",       // no value
            b";a= ",      // no value
            b";a ",       // BWS after name, then end of line
            b";a=b ",     // BWS after value, then end of line
            b";a=\"x",    // unterminated quoted-string (CR inside)
            b";a=\"x\"y", // junk after quoted-string
            b";a b",      // two names
            b";a=b c",    // two values
            b";a=(b)",    // not a token
            b";a\x00",    // CTL
            b";a=\"\x01\"",
            b";a=\"\\\x01\"",
            b";\xff",
        ] {
            let mut body = b"3".to_vec();
            body.extend_from_slice(ext);
            body.extend_from_slice(b"\r\nabc\r\n0\r\n\r\n");
            assert_eq!(
                error(&body),
                BAD_EXT.0,
                "{:?}",
                String::from_utf8_lossy(ext)
            );
        }
    }

    #[test]
    fn chunk_extension_length_limited() {
        let mut line = b"3;a=".to_vec();
        line.resize(MAX_EXT_BYTES + 1, b'x'); // exactly MAX_EXT_BYTES after the size
        line.extend_from_slice(b"\r\nabc\r\n0\r\n\r\n");
        assert_eq!(decode_all(&line).unwrap().0, b"abc");
        let mut line = b"3;a=".to_vec();
        line.resize(MAX_EXT_BYTES + 2, b'x');
        line.extend_from_slice(b"\r\nabc\r\n0\r\n\r\n");
        assert_eq!(error(&line), EXT_TOO_LONG.0);
        // The limit is per line.
        let mut body = Vec::new();
        for _ in 0..3 {
            body.extend_from_slice(b"1;");
            body.resize(body.len() + MAX_EXT_BYTES - 1, b'e');
            body.extend_from_slice(b"\r\nz\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(decode_all(&body).unwrap().0, b"zzz");
    }

    #[test]
    fn bare_lf_refused_everywhere_rfc9112_7_1() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5;a\nhello\r\n",
            b"5;a=b\nhello\r\n",
            b"5;a=\"b\"\nhello\r\n",
            b"0\n\r\n",
            b"0\r\n\n",
            b"0\r\nX: y\n\r\n",
            b"\n",
        ] {
            assert_eq!(error(bad), BARE_LF.0, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn cr_without_lf_refused_rfc9112_7_1() {
        for bad in [
            &b"5\rhello\r\n"[..],
            b"5\r\rhello",
            b"0\r\n\rX",
            b"0\r\nX: y\rZ",
        ] {
            assert_eq!(error(bad), CR_NO_LF.0, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn data_must_be_followed_by_crlf_rfc9112_7_1() {
        for bad in [
            &b"5\r\nhelloX\r\n0\r\n\r\n"[..],
            b"5\r\nhello\rX",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhello\r\r\n",
            b"5\r\nhello0\r\n\r\n",
        ] {
            assert_eq!(
                error(bad),
                DATA_NO_CRLF.0,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn trailers_are_validated_and_discarded_rfc9112_7_1_2() {
        let body = b"3\r\nabc\r\n0\r\nX-Checksum: abc\r\nX-Empty:\r\nX-Ws: \t a b \t\r\nX-Obs: \xe9\r\n\r\n";
        let (data, consumed, done) = decode_all(body).unwrap();
        assert_eq!(data, b"abc");
        assert_eq!(consumed, body.len());
        assert!(done);
    }

    #[test]
    fn malformed_trailers_refused_rfc9112_7_1_2() {
        for (bad, want) in [
            (&b"0\r\nX : y\r\n\r\n"[..], BAD_TRAILER_NAME), // RFC 9112 §5.1 space before colon
            (b"0\r\nX: y\r\n z\r\n\r\n", BAD_TRAILER_NAME), // RFC 9112 §5.2 obs-fold
            (b"0\r\n y\r\n\r\n", BAD_TRAILER_NAME),
            (b"0\r\nNoColon\r\n\r\n", BAD_TRAILER_NAME),
            (b"0\r\n: v\r\n\r\n", BAD_TRAILER_NAME),
            (b"0\r\nX(: v\r\n\r\n", BAD_TRAILER_NAME),
            (b"0\r\nX: a\x00b\r\n\r\n", BAD_TRAILER_VALUE), // RFC 9110 §5.5 CTL
            (b"0\r\nX: a\x7fb\r\n\r\n", BAD_TRAILER_VALUE),
            (b"0\r\nX: a\x1bb\r\n\r\n", BAD_TRAILER_VALUE),
        ] {
            assert_eq!(error(bad), want.0, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn trailer_section_size_limited_rfc9112_7_1_2() {
        // Exactly MAX_TRAILER_BYTES of trailer section, final CRLF included.
        let mut body = b"0\r\nX: ".to_vec();
        body.resize(3 + MAX_TRAILER_BYTES - 4, b'v');
        body.extend_from_slice(b"\r\n\r\n");
        assert_eq!(body.len() - 3, MAX_TRAILER_BYTES);
        assert!(decode_all(&body).unwrap().2);
        let mut body = b"0\r\nX: ".to_vec();
        body.resize(3 + MAX_TRAILER_BYTES - 3, b'v');
        body.extend_from_slice(b"\r\n\r\n");
        assert_eq!(error(&body), TRAILER_TOO_LARGE.0);
        // Many small trailer lines add up too.
        let mut body = b"0\r\n".to_vec();
        while body.len() < MAX_TRAILER_BYTES + 10 {
            body.extend_from_slice(b"A: b\r\n");
        }
        body.extend_from_slice(b"\r\n");
        assert_eq!(error(&body), TRAILER_TOO_LARGE.0);
    }

    #[test]
    fn errors_are_sticky() {
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.decode(b"z"), Err(NOT_HEX));
        assert_eq!(d.decode(b"5\r\nhello\r\n"), Err(NOT_HEX));
        assert_eq!(d.decode(b""), Err(NOT_HEX));
        assert!(!d.is_done());
    }

    #[test]
    fn large_chunk_sizes_are_streamed() {
        // A 4 GiB chunk announced; data is reported as it arrives, never buffered.
        let mut d = ChunkedDecoder::new();
        let r = d.decode(b"100000000\r\n").unwrap();
        assert_eq!((r.consumed, r.data.is_empty()), (11, true));
        let block = vec![b'x'; 64 * 1024];
        let r = d.decode(&block).unwrap();
        assert_eq!(r.data, 0..block.len());
    }

    #[test]
    fn chunk_header_and_encode_chunk_rfc9112_7_1() {
        assert_eq!(chunk_header(0).as_bytes(), b"0\r\n");
        assert_eq!(chunk_header(1).as_ref(), b"1\r\n");
        assert_eq!(&*chunk_header(0x10), b"10\r\n");
        assert_eq!(&*chunk_header(0xabc), b"abc\r\n");
        assert_eq!(
            &*chunk_header(usize::MAX),
            format!("{:x}\r\n", usize::MAX).as_bytes()
        );
        for n in [2, 15, 16, 255, 256, 4095, 65536, 1 << 40] {
            assert_eq!(&*chunk_header(n), format!("{n:x}\r\n").as_bytes());
        }

        let mut out = b">".to_vec();
        encode_chunk(&mut out, b"hello");
        assert_eq!(out, b">5\r\nhello\r\n");
        // Empty data writes nothing: an empty chunk would end the body.
        encode_chunk(&mut out, b"");
        assert_eq!(out, b">5\r\nhello\r\n");
        assert_eq!(LAST_CHUNK, b"0\r\n\r\n");
    }

    #[test]
    fn encode_then_decode_round_trip() {
        let payload: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let mut body = Vec::new();
        for piece in payload.chunks(777) {
            encode_chunk(&mut body, piece);
        }
        body.extend_from_slice(LAST_CHUNK);
        for split in (0..body.len()).step_by(97) {
            let (a, b) = body.split_at(split);
            let (data, consumed, done) = run(&[a, b]).unwrap();
            assert_eq!(data, payload);
            assert_eq!(consumed, body.len());
            assert!(done);
        }
    }
}
