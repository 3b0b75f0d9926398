//! llama.cpp's SentencePiece (`tokenizer.ggml.model = "llama"`) tokenizer: score-driven merges
//! over UTF-8 characters with byte fallback, transcribed from `llm_tokenizer_spm_session`.
//!
//! The input is one raw fragment with spaces already escaped to `▁`. Starting from single UTF-8
//! characters, the adjacent pair whose concatenation is a vocabulary token with the highest
//! score is merged (ties: leftmost), until no pair forms a token. Each final symbol is its token,
//! or, if it is a single character not in the vocabulary, its bytes as `<0xXX>` tokens.
//!
//! llama.cpp also keeps a `rev_merge` map to re-split symbols that are not tokens; since a merge
//! only ever produces a vocabulary token, that path never runs and is left out here.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// A pair of adjacent symbols that would merge into a token.
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .partial_cmp(&other.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// A run of the input: `text[start..start + n]` (n = 0 once merged into its left neighbour).
#[derive(Clone, Copy)]
struct Symbol {
    prev: Option<usize>,
    next: Option<usize>,
    start: usize,
    n: usize,
}

/// Length of the UTF-8 sequence a lead byte starts (llama.cpp's `unicode_len_utf8`).
fn utf8_len(b: u8) -> usize {
    const LOOKUP: [usize; 16] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4];
    LOOKUP[(b >> 4) as usize]
}

/// Tokenizes `text` (spaces already `▁`), appending ids to `out`. `score` gives a token's
/// score; `byte_token` maps a byte to its fallback token (or `None` if the vocabulary has none).
pub(crate) fn tokenize(
    text: &str,
    token_to_id: &HashMap<String, u32>,
    score: impl Fn(u32) -> f32,
    n_tokens: usize,
    byte_token: impl Fn(u8) -> Option<u32>,
    out: &mut Vec<u32>,
) -> Result<(), u8> {
    let bytes = text.as_bytes();
    let mut symbols: Vec<Symbol> = Vec::with_capacity(bytes.len());
    let mut offs = 0;
    while offs < bytes.len() {
        let n = utf8_len(bytes[offs]).min(bytes.len() - offs);
        let index = symbols.len();
        symbols.push(Symbol {
            prev: index.checked_sub(1),
            next: if offs + n == bytes.len() {
                None
            } else {
                Some(index + 1)
            },
            start: offs,
            n,
        });
        offs += n;
    }

    let mut queue = BinaryHeap::new();
    let try_add = |queue: &mut BinaryHeap<Bigram>,
                   symbols: &[Symbol],
                   left: Option<usize>,
                   right: Option<usize>| {
        let (Some(l), Some(r)) = (left, right) else {
            return;
        };
        let (a, b) = (symbols[l], symbols[r]);
        let Some(piece) = text.get(a.start..a.start + a.n + b.n) else {
            return;
        };
        let Some(&id) = token_to_id.get(piece) else {
            return;
        };
        if id as usize >= n_tokens {
            return;
        }
        queue.push(Bigram {
            left: l,
            right: r,
            score: score(id),
            size: piece.len(),
        });
    };

    for i in 1..symbols.len() {
        try_add(&mut queue, &symbols, Some(i - 1), Some(i));
    }

    while let Some(bigram) = queue.pop() {
        let (l, r) = (bigram.left, bigram.right);
        let (ls, rs) = (symbols[l], symbols[r]);
        // Skip pairs whose symbols have changed since the pair was queued.
        if ls.n == 0 || rs.n == 0 || ls.n + rs.n != bigram.size {
            continue;
        }
        symbols[l].n += rs.n;
        symbols[r].n = 0;
        symbols[l].next = rs.next;
        if let Some(next) = rs.next {
            symbols[next].prev = Some(l);
        }
        let (prev, next) = (symbols[l].prev, symbols[l].next);
        try_add(&mut queue, &symbols, prev, Some(l));
        try_add(&mut queue, &symbols, Some(l), next);
    }

    let mut i = if symbols.is_empty() { None } else { Some(0) };
    while let Some(idx) = i {
        let s = symbols[idx];
        let piece = &bytes[s.start..s.start + s.n];
        match std::str::from_utf8(piece)
            .ok()
            .and_then(|p| token_to_id.get(p))
        {
            Some(&id) => out.push(id),
            None => {
                for &b in piece {
                    out.push(byte_token(b).ok_or(b)?);
                }
            }
        }
        i = s.next;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(tokens: &[(&str, f32)]) -> (HashMap<String, u32>, Vec<f32>) {
        let map = tokens
            .iter()
            .enumerate()
            .map(|(i, (t, _))| (t.to_string(), i as u32))
            .collect();
        (map, tokens.iter().map(|(_, s)| *s).collect())
    }

    fn run(tokens: &[(&str, f32)], text: &str) -> Vec<u32> {
        let (map, scores) = vocab(tokens);
        let mut out = vec![];
        tokenize(
            text,
            &map,
            |id| scores[id as usize],
            scores.len(),
            |b| map.get(&format!("<0x{b:02X}>")).copied(),
            &mut out,
        )
        .unwrap();
        out
    }

    #[test]
    fn merges_by_score() {
        // "abc": "ab" (score -1) vs "bc" (score -0.5): bc wins, then a + bc has no token.
        let t = [
            ("a", -5.0),
            ("b", -5.0),
            ("c", -5.0),
            ("ab", -1.0),
            ("bc", -0.5),
        ];
        assert_eq!(run(&t, "abc"), vec![0, 4]);
        // With "abc" in the vocabulary the merge continues.
        let t2 = [
            ("a", -5.0),
            ("b", -5.0),
            ("c", -5.0),
            ("ab", -1.0),
            ("bc", -0.5),
            ("abc", -9.0),
        ];
        assert_eq!(run(&t2, "abc"), vec![5]);
        // Ties go to the leftmost pair: "aaa" -> "aa" + "a".
        let t3 = [("a", -1.0), ("aa", -1.0)];
        assert_eq!(run(&t3, "aaa"), vec![1, 0]);
    }

    #[test]
    fn byte_fallback() {
        let mut t: Vec<(String, f32)> = (0..=255u32)
            .map(|b| (format!("<0x{b:02X}>"), 0.0))
            .collect();
        t.push(("▁".into(), -1.0));
        let refs: Vec<(&str, f32)> = t.iter().map(|(s, f)| (s.as_str(), *f)).collect();
        // "é" (C3 A9) is not a token: two byte tokens.
        assert_eq!(run(&refs, "▁é"), vec![256, 0xC3, 0xA9]);
    }
}
