//! `ChunkedDecoder` is incremental: the peer decides how its bytes are split across reads, so
//! the outcome (data, where the body ends, done or which error) must not depend on the split.
//! The input after the first byte is a chunked body; the first byte picks one split point.
//! Decoded data, encoded again with `encode_chunk` / `chunk_header`, must decode to itself.

#![no_main]

use balancer_fuzz::chunked::{self, ChunkError, ChunkedDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    // Scaled, so any input length can be split anywhere.
    let split = usize::from(split) * input.len() / usize::from(u8::MAX);
    let (whole, runs) = decode(&[input]);
    let (halves, _) = decode(&[&input[..split], &input[split..]]);
    assert_eq!(whole, halves, "split at {split}");
    // The extreme split: one byte per read.
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(whole, decode(&bytes).0, "one byte per read");

    // Re-encoded as the engine forwards a body: the runs as found, then the last chunk.
    let mut encoded = Vec::new();
    for run in &runs {
        chunked::encode_chunk(&mut encoded, run);
    }
    encoded.extend_from_slice(chunked::LAST_CHUNK);
    assert_complete(&encoded, &whole.data);
    // Re-encoded as one chunk with a separate header (the vectored-write path).
    let mut encoded = Vec::new();
    if !whole.data.is_empty() {
        encoded.extend_from_slice(&chunked::chunk_header(whole.data.len()));
        encoded.extend_from_slice(&whole.data);
        encoded.extend_from_slice(chunked::CRLF);
    }
    encoded.extend_from_slice(chunked::LAST_CHUNK);
    assert_complete(&encoded, &whole.data);
});

#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    /// The body data passed on before the end or the error.
    data: Vec<u8>,
    /// Input bytes used (0 after an error).
    consumed: usize,
    done: bool,
    error: Option<ChunkError>,
}

/// Feeds `pieces` in order, as reads; returns the outcome and the data runs as returned.
fn decode(pieces: &[&[u8]]) -> (Outcome, Vec<Vec<u8>>) {
    let mut decoder = ChunkedDecoder::new();
    let mut out = Outcome::default();
    let mut runs = Vec::new();
    'reads: for piece in pieces {
        let mut at = 0;
        while at < piece.len() {
            let input = &piece[at..];
            match decoder.decode(input) {
                Err(e) => {
                    // The framing is lost for good: every later call fails the same way.
                    assert_eq!(decoder.decode(b"0\r\n\r\n"), Err(e), "error is sticky");
                    out.error = Some(e);
                    // A failing call reports no count, and after an error the connection is
                    // closed: how far the earlier calls got depends on the split, so it is
                    // not part of the outcome.
                    out.consumed = 0;
                    break 'reads;
                }
                Ok(d) => {
                    assert!(d.consumed <= input.len());
                    assert!(d.consumed > 0 || d.done, "no progress on non-empty input");
                    if !d.data.is_empty() {
                        assert_eq!(d.data.end, d.consumed, "data ends at consumed");
                        out.data.extend_from_slice(&input[d.data.clone()]);
                        runs.push(input[d.data.clone()].to_vec());
                    }
                    at += d.consumed;
                    out.consumed += d.consumed;
                    assert_eq!(decoder.is_done(), d.done);
                    if d.done {
                        // Bytes after the body belong to the next message: never consumed.
                        let next = decoder.decode(b"GET / HTTP/1.1\r\n\r\n");
                        assert!(
                            matches!(&next, Ok(n) if n.consumed == 0 && n.done && n.data.is_empty()),
                            "after done: {next:?}"
                        );
                        out.done = true;
                        break 'reads;
                    }
                }
            }
        }
    }
    (out, runs)
}

fn assert_complete(encoded: &[u8], data: &[u8]) {
    let (again, _) = decode(&[encoded]);
    assert_eq!(
        again,
        Outcome {
            data: data.to_vec(),
            consumed: encoded.len(),
            done: true,
            error: None,
        },
        "re-encoded {:?}",
        String::from_utf8_lossy(encoded)
    );
}
