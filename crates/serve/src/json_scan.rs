//! The scan for the bytes that JSON escapes (`"`, `\\` and control
//! characters), sixteen bytes at a time.
//!
//! Layer: a leaf shared by the admission reader and encoder (detour-webhook)
//! and the JSON log formatter ([`crate::log_format`]). Most of what detour
//! reads and writes (references, names, pointers, log fields) has none of
//! these bytes, so a scan for them is much faster than escaping byte by byte.
//! The one place in the workspace with `unsafe` (the SSE2 intrinsics, with
//! the reason at each use).
#![allow(unsafe_code)]

/// Whether serde_json would escape anything in `text`: it escapes exactly
/// `"`, `\` and control characters, and most of what detour writes
/// (references, names, pointers, log fields) has none; a scan for them is
/// much faster than escaping byte by byte.
#[inline]
pub fn needs_escape(text: &str) -> bool {
    special_byte(text.as_bytes(), 0) < text.len()
}

/// The index of the first `"`, `\` or control character at or after `from`
/// (or the body's length): the end of the plain run in a string.
///
/// Sixteen bytes at a time with SSE2 (part of every x86-64 CPU): most keys
/// and values are shorter than that, so the loop nearly always ends in its
/// first round, which the branch predictor learns. Elsewhere, eight bytes
/// at a time in a `u64`.
#[inline]
pub fn special_byte(body: &[u8], from: usize) -> usize {
    let mut at = from;
    #[cfg(target_arch = "x86_64")]
    while let Some(Ok(chunk)) = body.get(at..at + 16).map(<&[u8; 16]>::try_from) {
        // SAFETY: SSE2 is part of the x86-64 baseline (every x86_64 target
        // enables it), so the CPU has the feature `special_mask` requires.
        let special = unsafe { special_mask(chunk) };
        if special != 0 {
            return at + special.trailing_zeros() as usize;
        }
        at += 16;
    }
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // The classic has-zero-byte test: (x - 0x01..) & !x & 0x80.. marks the
    // bytes of x that are zero; the lowest mark is always a true one.
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    while let Some(chunk) = body.get(at..at + 8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let marks = zero_bytes(x ^ (ONES * u64::from(b'"')))
            | zero_bytes(x ^ (ONES * u64::from(b'\\')))
            // Bytes below 0x20: subtracting 0x20 borrows from bit 7.
            | (x.wrapping_sub(ONES * 0x20) & !x & HIGH);
        if marks != 0 {
            return at + (marks.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while let Some(&b) = body.get(at) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            break;
        }
        at += 1;
    }
    at
}

/// The bits of the bytes of `chunk` that are `"`, `\` or control characters.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn special_mask(chunk: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    // SAFETY: `chunk` is 16 readable bytes, and an unaligned load (`movdqu`)
    // has no alignment requirement.
    let bytes = unsafe { _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>()) };
    let quote = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'"' as i8));
    let backslash = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'\\' as i8));
    // b < 0x20 exactly when max(b, 0x20) != b (unsigned).
    let at_least_space = _mm_cmpeq_epi8(_mm_max_epu8(bytes, _mm_set1_epi8(0x20)), bytes);
    (_mm_movemask_epi8(_mm_or_si128(quote, backslash))
        | (!_mm_movemask_epi8(at_least_space) & 0xffff)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_run_scan_finds_the_first_special_byte() {
        let alphabet = [b'a', b'"', b'\\', 0x00, 0x1f, 0x20, 0x7f, 0x80, 0xff, b'!'];
        // Deterministic pseudo-random bodies; every start offset of each.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..500 {
            let len = (seed % 70) as usize;
            let body: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    // Mostly plain bytes, so that runs are long enough to matter.
                    if seed % 6 == 0 {
                        alphabet[(seed >> 8) as usize % alphabet.len()]
                    } else {
                        b'a' + (seed >> 16) as u8 % 26
                    }
                })
                .collect();
            for from in 0..=body.len() {
                let naive = (from..body.len())
                    .find(|&i| body[i] == b'"' || body[i] == b'\\' || body[i] < 0x20)
                    .unwrap_or(body.len());
                assert_eq!(special_byte(&body, from), naive, "{body:?} from {from}");
            }
        }
    }

    #[test]
    fn needs_escape_finds_a_special_byte_anywhere() {
        let plain = "registry.k8s.io/ingress-nginx/controller:v1.9.4 ünï ".repeat(5);
        assert!(!needs_escape(&plain));
        for at in [0, 1, 31, 32, 33, 100, plain.len()] {
            for special in ['"', '\\', '\n', '\u{1f}', '\0'] {
                let mut text = plain.clone();
                text.insert(at, special);
                assert!(needs_escape(&text), "{special:?} at {at}");
            }
        }
    }
}
