//! Inflates a request body by its `Content-Encoding`, streaming, and stops at
//! the inflated-size cap so a decompression bomb costs at most the cap.
//!
//! Decoders come from well-kept crates: flate2 (gzip, zlib and raw deflate),
//! brotli-decompressor (`br`, which the Python SDK sends when brotli is
//! installed) and zstd. Each is read through `Read::take(cap + 1)`: reading
//! one byte past the cap proves the body too large without inflating more.
//!
//! gzip, what the SDKs send, first gets a one-shot try with libdeflate
//! (libdeflater): a gzip body ends with its inflated size, so the output can
//! be allocated once and inflated in one call, about twice as fast as
//! flate2's stream on event-sized bodies (`BENCHMARKS.md`). Only a size the
//! body could honestly have, within the cap and 1 MiB, is trusted; anything
//! the one-shot try refuses (a wrong size, a bomb, a corrupt or unusual
//! body) goes to flate2's stream, which decides and words the error.
//!
//! Legacy `/store/` bodies (base64 of the event or of its zlib stream, sent
//! without a `Content-Encoding`) are decoded here too, under the same cap.
//!
//! And gzip'd attachments (a rotated `app.log.gz`): recognised by their
//! magic ([`is_gzip`]), inflated by [`decode`] under the attachment's cap,
//! and gzip'd again ([`gzip`]) once scrubbed.

use std::cell::RefCell;
use std::io::Read;

use bytes::Bytes;
use flate2::bufread::MultiGzDecoder;

/// A `Content-Encoding` the relay can decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// No encoding (also an empty header, or `identity`).
    Identity,
    /// `gzip` or `x-gzip`.
    Gzip,
    /// `deflate`: zlib-wrapped per the RFC, or raw deflate as some clients send.
    Deflate,
    /// `br`.
    Brotli,
    /// `zstd`.
    Zstd,
}

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The `Content-Encoding` names something else (415).
    #[error("unsupported Content-Encoding {0:?} (supported: gzip, deflate, br, zstd, identity)")]
    Unsupported(String),
    /// The body inflates past the cap (413).
    #[error("body inflates past the limit of {limit} bytes")]
    TooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// The stream is corrupt or truncated (400).
    #[error("body is not valid {encoding}: {source}")]
    Corrupt {
        /// The encoding that failed.
        encoding: &'static str,
        /// The decoder's complaint.
        #[source]
        source: std::io::Error,
    },
}

impl Encoding {
    /// Reads a `Content-Encoding` header value; absent or empty means identity.
    pub fn from_header(value: Option<&str>) -> Result<Encoding, DecodeError> {
        let value = value.unwrap_or("").trim();
        Ok(match value.to_ascii_lowercase().as_str() {
            "" | "identity" => Encoding::Identity,
            "gzip" | "x-gzip" => Encoding::Gzip,
            "deflate" => Encoding::Deflate,
            "br" => Encoding::Brotli,
            "zstd" => Encoding::Zstd,
            _ => return Err(DecodeError::Unsupported(value.chars().take(64).collect())),
        })
    }

    /// The header token, for messages and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
        }
    }
}

thread_local! {
    /// This thread's libdeflate decompressor (about 10 KB of tables, kept
    /// rather than allocated per body).
    static ONE_SHOT: RefCell<Option<libdeflater::Decompressor>> = const { RefCell::new(None) };
}

/// Largest inflated size the one-shot gzip path allocates up front; larger
/// bodies stream (see [`inflate`]).
const ONE_SHOT_MAX: usize = 1 << 20;

/// DEFLATE's largest expansion (a 258-byte match per two bits or so): a
/// body cannot honestly claim more than this many bytes per byte.
const DEFLATE_MAX_RATIO: usize = 1032;

/// gzip's header flag for a header CRC-16, which libdeflate skips without
/// checking (flate2 checks it): such bodies stream.
const GZIP_FHCRC: u8 = 0x02;

/// Largest zstd window a body may use: 2^24 bytes.
const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// Decodes `body` into at most `limit` bytes.
pub fn decode(encoding: Encoding, body: Bytes, limit: usize) -> Result<Bytes, DecodeError> {
    let input: &[u8] = &body;
    match encoding {
        Encoding::Identity => {
            if body.len() > limit {
                return Err(DecodeError::TooLarge { limit });
            }
            Ok(body)
        }
        Encoding::Gzip => match gunzip_one_shot(input, limit) {
            Some(out) => Ok(Bytes::from(out)),
            None => gunzip_stream(input, limit),
        },
        Encoding::Deflate if looks_like_zlib(input) => inflate_whole(
            flate2::bufread::ZlibDecoder::new(input),
            encoding,
            input.len(),
            limit,
            |d| !d.get_ref().is_empty(),
        ),
        Encoding::Deflate => inflate_whole(
            flate2::bufread::DeflateDecoder::new(input),
            encoding,
            input.len(),
            limit,
            |d| !d.get_ref().is_empty(),
        ),
        // Read again past the end: the reader then refuses bytes it holds
        // after the stream; those it never read are still its input.
        Encoding::Brotli => inflate_whole(
            brotli_decompressor::Decompressor::new(input, 8 * 1024),
            encoding,
            input.len(),
            limit,
            |d| d.read(&mut [0u8; 1]).map_or(true, |n| n > 0) || !d.get_ref().is_empty(),
        ),
        Encoding::Zstd => {
            let corrupt = |source| DecodeError::Corrupt {
                encoding: "zstd",
                source,
            };
            let mut decoder = zstd::stream::read::Decoder::with_buffer(input).map_err(corrupt)?;
            // A frame may ask for a window of up to 128 MiB, allocated up front
            // whatever the inflated cap; 16 MiB is plenty for SDK payloads.
            decoder
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(corrupt)?;
            // Every frame: zstd frames may be concatenated, as gzip members
            // may; bytes after the last that are not a frame are corrupt.
            inflate(decoder, encoding, input.len(), limit)
        }
    }
}

/// Whether bytes begin as a gzip stream does: its magic and the deflate
/// method (RFC 1952), whatever the file's name or content type says.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b, 0x08])
}

/// `data` gzip'd in one call to libdeflate at its default level (6): a
/// scrubbed attachment that came gzip'd leaves gzip'd.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut compressor = libdeflater::Compressor::new(libdeflater::CompressionLvl::default());
    let mut out = vec![0; compressor.gzip_compress_bound(data.len())];
    let written = compressor
        .gzip_compress(data, &mut out)
        .expect("the bound holds whatever gzip writes");
    out.truncate(written);
    out
}

/// `data` in a zlib stream (RFC 1950), in one call to libdeflate at its
/// default level: a scrubbed replay recording that came compressed leaves
/// compressed, in the format the SDK wrote.
pub fn zlib(data: &[u8]) -> Vec<u8> {
    let mut compressor = libdeflater::Compressor::new(libdeflater::CompressionLvl::default());
    let mut out = vec![0; compressor.zlib_compress_bound(data.len())];
    let written = compressor
        .zlib_compress(data, &mut out)
        .expect("the bound holds whatever zlib writes");
    out.truncate(written);
    out
}

/// Whether a `/store/` body is in the legacy encoding rather than JSON text:
/// its first byte after whitespace is there and is not `{`.
pub fn is_legacy_store(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b != b'{')
}

/// Decodes a legacy `/store/` body: base64 (whitespace ignored) of the JSON
/// event or of its zlib (or raw deflate) stream, inflated into at most
/// `limit` bytes as any body is. A body that is not base64 comes back as it
/// came: the event parser judges it, and words why it is refused.
pub fn decode_legacy_store(body: Bytes, limit: usize) -> Result<Bytes, DecodeError> {
    use base64::Engine as _;
    let base64 = &base64::engine::general_purpose::STANDARD;
    // Copied without its whitespace only when it has some (wrapped lines).
    let raw = if body.iter().any(|b| b.is_ascii_whitespace()) {
        let text: Vec<u8> = body
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        base64.decode(text)
    } else {
        base64.decode(&body)
    };
    let Ok(raw) = raw else {
        return Ok(body);
    };
    drop(body);
    let encoding = if raw.first() == Some(&b'{') {
        Encoding::Identity
    } else {
        Encoding::Deflate
    };
    decode(encoding, Bytes::from(raw), limit)
}

/// Inflates a gzip body of one member in one call to libdeflate, if its
/// trailer's size (ISIZE) is one the body could honestly have, no larger
/// than `limit` and [`ONE_SHOT_MAX`]. `None` when it is not, or libdeflate
/// refuses the body (corrupt, a wrong size or checksum, an empty result, a
/// header CRC), or the body may hold more than one member (libdeflate reads
/// only the first, and does not say where it ended): the stream then
/// decides. One member is certain when the body's last eight bytes are the
/// trailer of what was inflated, and that trailer is nowhere else followed
/// by a member's magic (a body whose last member repeats the first).
fn gunzip_one_shot(input: &[u8], limit: usize) -> Option<Vec<u8>> {
    let flags = *input.get(3)?;
    let trailer = input.get(input.len().checked_sub(8)?..)?;
    let crc = u32::from_le_bytes(trailer[..4].try_into().ok()?);
    let size = u32::from_le_bytes(trailer[4..].try_into().ok()?) as usize;
    if flags & GZIP_FHCRC != 0
        || size == 0
        || size > limit.min(ONE_SHOT_MAX)
        || size > input.len().saturating_mul(DEFLATE_MAX_RATIO)
    {
        return None;
    }
    let mut out = vec![0; size];
    let inflated = ONE_SHOT.with_borrow_mut(|kept| {
        kept.get_or_insert_with(libdeflater::Decompressor::new)
            .gzip_decompress(input, &mut out)
    });
    if inflated.ok()? != size || libdeflater::crc32(&out) != crc {
        return None;
    }
    let mut member_end = [0u8; 10];
    member_end[..8].copy_from_slice(trailer);
    member_end[8..].copy_from_slice(&[0x1f, 0x8b]);
    let more = memchr::memmem::find(&input[..input.len() - 8], &member_end).is_some();
    (!more).then_some(out)
}

/// Inflates a gzip body with flate2, streaming: every member (a gzip body
/// may be several, one after the other), and bytes after the last that are
/// not a member are corrupt.
fn gunzip_stream(input: &[u8], limit: usize) -> Result<Bytes, DecodeError> {
    inflate(
        MultiGzDecoder::new(input),
        Encoding::Gzip,
        input.len(),
        limit,
    )
}

/// [`inflate`] a body whose decoder reads from a `&[u8]`, then refuses it
/// when `past_end` says bytes follow its compressed stream: they are no
/// part of it, and silently dropping what a client sent is not an option.
fn inflate_whole<R: Read>(
    mut decoder: R,
    encoding: Encoding,
    wire_len: usize,
    limit: usize,
    past_end: impl FnOnce(&mut R) -> bool,
) -> Result<Bytes, DecodeError> {
    let out = inflate(&mut decoder, encoding, wire_len, limit)?;
    if past_end(&mut decoder) {
        return Err(DecodeError::Corrupt {
            encoding: encoding.as_str(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "bytes after the end of the stream",
            ),
        });
    }
    Ok(out)
}

/// A zlib stream starts with a CMF/FLG pair: deflate method, and a check value.
pub fn looks_like_zlib(input: &[u8]) -> bool {
    match input {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

/// Output grows by doubling up to this size; past it, it is read in chunks
/// of this size.
const CHUNK: usize = 1 << 20;

fn inflate(
    reader: impl Read,
    encoding: Encoding,
    wire_len: usize,
    limit: usize,
) -> Result<Bytes, DecodeError> {
    let corrupt = |source| DecodeError::Corrupt {
        encoding: encoding.as_str(),
        source,
    };
    // Sentry events compress 4-6x; start there and let the Vec grow.
    let mut out = Vec::with_capacity(wire_len.saturating_mul(6).min(limit).max(1024));
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut capped = reader.take(cap);
    // Small bodies (nearly all) grow by doubling. Past 1 MiB the rest is
    // read in 1 MiB chunks and joined once at the end: growing one buffer by
    // doubling copies it at every step and leaves each old buffer to the
    // allocator, which may keep it (a bomb cost up to twice the cap that
    // way). Chunks freed after a bomb are reused by the next one.
    let first = CHUNK.min(limit) as u64 + 1;
    (&mut capped)
        .take(first)
        .read_to_end(&mut out)
        .map_err(corrupt)?;
    if out.len() as u64 == first {
        let mut chunks = vec![out];
        let mut total = chunks[0].len();
        loop {
            let mut chunk = Vec::with_capacity(CHUNK);
            (&mut capped)
                .take(CHUNK as u64)
                .read_to_end(&mut chunk)
                .map_err(corrupt)?;
            if chunk.is_empty() {
                break;
            }
            total += chunk.len();
            if total > limit {
                return Err(DecodeError::TooLarge { limit });
            }
            chunks.push(chunk);
        }
        out = Vec::with_capacity(total);
        for chunk in chunks {
            out.extend_from_slice(&chunk);
        }
    }
    if out.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    if out.is_empty() && wire_len > 0 {
        // Every decoder here yields at least one byte for a non-empty valid stream
        // of a non-empty body; an empty result from bytes is a stream cut short.
        return Err(corrupt(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "stream ended early",
        )));
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests;
