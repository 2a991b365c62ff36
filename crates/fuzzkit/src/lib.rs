//! Inputs for the parsers' robustness tests: random bytes, and real inputs
//! (fixture lines, test cases) damaged the way a fuzzer would damage them.
//!
//! Why not only random bytes: a parser rejects almost every random string at
//! its first byte, so the deep states (a half-valid address after a valid
//! prefix, a set inside a chain inside a table) are reached only by mutating
//! inputs that are valid to begin with. The mutations are those of libFuzzer
//! and AFL: erase, insert or overwrite with a token of the format, insert random bytes, copy a
//! piece, cross over with another input, flip a byte, put an extreme number.
//!
//! Each harness is a proptest; its number of cases comes from
//! `CONNSCOPE_FUZZ_CASES` (the soak run sets a million), so `cargo test` stays
//! at seconds while the same tests run long in the soak. A failure shrinks to
//! a small input that proptest prints and keeps in `proptest-regressions/`.

use proptest::prelude::*;
use proptest::test_runner::Config;

/// Environment variable giving the number of cases of each harness.
pub const CASES_VAR: &str = "CONNSCOPE_FUZZ_CASES";

/// Cases per harness: `CONNSCOPE_FUZZ_CASES`, else `default`.
pub fn cases(default: u32) -> u32 {
    match std::env::var(CASES_VAR) {
        Ok(text) => text
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{CASES_VAR}={text:?} is not a number of cases")),
        Err(_) => default,
    }
}

/// A proptest configuration running [`cases`]`(default)` cases.
pub fn config(default: u32) -> Config {
    Config {
        cases: cases(default),
        // Shrinking a failure of a million-case run must not take hours.
        max_shrink_iters: 10_000,
        ..Config::default()
    }
}

/// The non-empty lines of a text, as corpus entries.
pub fn lines(text: &str) -> Vec<Vec<u8>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.as_bytes().to_vec())
        .collect()
}

/// Numbers that find overflows and off-by-ones in length and range checks.
const EXTREME_NUMBERS: &[&[u8]] = &[
    b"0",
    b"-1",
    b"255",
    b"256",
    b"65535",
    b"65536",
    b"2147483648",
    b"4294967295",
    b"4294967296",
    b"9223372036854775807",
    b"18446744073709551615",
    b"18446744073709551616",
    b"99999999999999999999999999",
    b"1e308",
    b"-0",
    b"29",
    b"30",
    b"31",
    b"60",
];

/// One edit of an input.
#[derive(Debug, Clone)]
enum Edit {
    Erase {
        at: usize,
        len: usize,
    },
    InsertToken {
        at: usize,
        token: usize,
    },
    OverwriteToken {
        at: usize,
        token: usize,
    },
    InsertBytes {
        at: usize,
        bytes: Vec<u8>,
    },
    CopyPiece {
        from: usize,
        len: usize,
        to: usize,
    },
    CrossOver {
        other: usize,
        from: usize,
        len: usize,
        to: usize,
    },
    SetByte {
        at: usize,
        byte: u8,
    },
    ExtremeNumber {
        at: usize,
        number: usize,
    },
    Truncate {
        at: usize,
    },
    Repeat {
        from: usize,
        len: usize,
        times: usize,
    },
}

fn edit() -> impl Strategy<Value = Edit> {
    let at = any::<usize>();
    prop_oneof![
        (at, 1usize..24).prop_map(|(at, len)| Edit::Erase { at, len }),
        (at, any::<usize>()).prop_map(|(at, token)| Edit::InsertToken { at, token }),
        (at, any::<usize>()).prop_map(|(at, token)| Edit::OverwriteToken { at, token }),
        (at, prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Edit::InsertBytes { at, bytes }),
        (at, 1usize..64, any::<usize>()).prop_map(|(from, len, to)| Edit::CopyPiece {
            from,
            len,
            to
        }),
        (any::<usize>(), at, 1usize..128, any::<usize>()).prop_map(|(other, from, len, to)| {
            Edit::CrossOver {
                other,
                from,
                len,
                to,
            }
        }),
        (at, any::<u8>()).prop_map(|(at, byte)| Edit::SetByte { at, byte }),
        (at, any::<usize>()).prop_map(|(at, number)| Edit::ExtremeNumber { at, number }),
        at.prop_map(|at| Edit::Truncate { at }),
        (at, 1usize..16, 2usize..64).prop_map(|(from, len, times)| Edit::Repeat {
            from,
            len,
            times
        }),
    ]
}

fn apply(input: &mut Vec<u8>, edit: &Edit, corpus: &[Vec<u8>], tokens: &[&[u8]]) {
    // Positions are taken modulo the current length, so every edit applies.
    let pos = |at: usize, len: usize| at % (len + 1);
    match *edit {
        Edit::Erase { at, len } => {
            let start = pos(at, input.len());
            let end = (start + len).min(input.len());
            input.drain(start..end);
        }
        Edit::InsertToken { at, token } if !tokens.is_empty() => {
            let start = pos(at, input.len());
            let token = tokens[token % tokens.len()];
            input.splice(start..start, token.iter().copied());
        }
        Edit::OverwriteToken { at, token } if !tokens.is_empty() => {
            let start = pos(at, input.len());
            let token = tokens[token % tokens.len()];
            let end = (start + token.len()).min(input.len());
            input.splice(start..end, token.iter().copied());
        }
        Edit::InsertToken { .. } | Edit::OverwriteToken { .. } => {}
        Edit::InsertBytes { at, ref bytes } => {
            let start = pos(at, input.len());
            input.splice(start..start, bytes.iter().copied());
        }
        Edit::CopyPiece { from, len, to } => {
            let start = pos(from, input.len());
            let piece = input[start..(start + len).min(input.len())].to_vec();
            let to = pos(to, input.len());
            input.splice(to..to, piece);
        }
        Edit::CrossOver {
            other,
            from,
            len,
            to,
        } => {
            let other = &corpus[other % corpus.len()];
            let start = pos(from, other.len());
            let piece = &other[start..(start + len).min(other.len())];
            let to = pos(to, input.len());
            input.splice(to..to, piece.iter().copied());
        }
        Edit::SetByte { at, byte } if !input.is_empty() => {
            let at = at % input.len();
            input[at] = byte;
        }
        Edit::SetByte { .. } => {}
        Edit::ExtremeNumber { at, number } => {
            // Replaces the run of digits at or after `at` (or inserts there).
            let start = pos(at, input.len());
            let digits = input[start..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            let number = EXTREME_NUMBERS[number % EXTREME_NUMBERS.len()];
            input.splice(start..start + digits, number.iter().copied());
        }
        Edit::Truncate { at } => input.truncate(pos(at, input.len())),
        Edit::Repeat { from, len, times } => {
            let start = pos(from, input.len());
            let piece = input[start..(start + len).min(input.len())].to_vec();
            let repeated = piece.repeat(times);
            input.splice(start..start, repeated);
        }
    }
}

/// A corpus entry damaged by 1 to 8 edits. `tokens` are words of the format
/// (keywords, delimiters) that edits may insert. `corpus` must not be empty.
pub fn mutated(
    corpus: Vec<Vec<u8>>,
    tokens: &'static [&'static [u8]],
) -> impl Strategy<Value = Vec<u8>> {
    assert!(!corpus.is_empty(), "a mutation corpus needs an input");
    let pick = any::<usize>();
    (pick, prop::collection::vec(edit(), 1..8)).prop_map(move |(pick, edits)| {
        let mut input = corpus[pick % corpus.len()].clone();
        for edit in &edits {
            apply(&mut input, edit, &corpus, tokens);
        }
        input
    })
}

/// Random bytes, biased towards printable ASCII (which is what the formats
/// are made of) but with every byte value possible.
pub fn random_bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        3 => 0x20u8..0x7f,
        1 => any::<u8>(),
    ];
    prop::collection::vec(byte, 0..max_len)
}

/// Several inputs of `strategy` joined by `separator`: multi-line files and
/// batches, where one damaged line sits among good ones.
pub fn joined(
    strategy: impl Strategy<Value = Vec<u8>>,
    max_parts: usize,
    separator: &'static [u8],
) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(strategy, 1..max_parts).prop_map(move |parts| parts.join(separator))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    #[test]
    fn mutations_change_inputs_and_keep_some_of_them() {
        let corpus = lines("connect: user root, local 1.2.3.4:1, remote 5.6.7.8:2\n");
        let strategy = mutated(corpus.clone(), &[b", "]);
        let mut runner = TestRunner::deterministic();
        let inputs: Vec<Vec<u8>> = (0..200)
            .map(|_| strategy.new_tree(&mut runner).unwrap().current())
            .collect();
        let changed = inputs.iter().filter(|i| **i != corpus[0]).count();
        assert!(changed > 190, "only {changed} of 200 were changed");
        let keep_prefix = inputs.iter().filter(|i| i.starts_with(b"connect")).count();
        assert!(keep_prefix > 50, "only {keep_prefix} of 200 kept a prefix");
    }

    #[test]
    fn extreme_numbers_replace_digit_runs() {
        let mut input = b"port 22;".to_vec();
        apply(
            &mut input,
            &Edit::ExtremeNumber { at: 5, number: 4 },
            &[],
            &[],
        );
        assert_eq!(input, b"port 65535;");
    }
}
