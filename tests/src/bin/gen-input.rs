//! `gen-input`: writes benchmark and test inputs from a fixed seed.
//!
//! gen-input --kind small|random64 --files N (--lines L | --bytes B) --seed S --out DIR [--prefix P]
//!   small:    numbers drawn from 1..=10^7
//!   random64: uniform random 64-bit numbers

use std::io::Write;
use std::path::PathBuf;

fn main() {
    let mut kind = String::from("random64");
    let (mut files, mut lines, mut bytes, mut seed) = (1u64, 0u64, 0u64, 1u64);
    let mut out = PathBuf::from(".");
    let mut prefix = String::from("f");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| die(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--kind" => kind = val(),
            "--files" => files = val().parse().unwrap_or_else(|_| die("--files: a number")),
            "--lines" => lines = val().parse().unwrap_or_else(|_| die("--lines: a number")),
            "--bytes" => bytes = val().parse().unwrap_or_else(|_| die("--bytes: a number")),
            "--seed" => seed = val().parse().unwrap_or_else(|_| die("--seed: a number")),
            "--out" => out = PathBuf::from(val()),
            "--prefix" => prefix = val(),
            _ => die(&format!("unknown argument {a}")),
        }
    }
    if lines == 0 && bytes == 0 {
        die("give --lines or --bytes");
    }
    if let Err(e) = std::fs::create_dir_all(&out) {
        die(&format!("creating {}: {e}", out.display()));
    }
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for f in 0..files {
        let path = out.join(format!("{prefix}{f:05}.txt"));
        let file = std::fs::File::create(&path)
            .unwrap_or_else(|e| die(&format!("{}: {e}", path.display())));
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        let (mut n, mut written) = (0u64, 0u64);
        while (lines > 0 && n < lines) || (bytes > 0 && written < bytes) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = if kind == "small" {
                x % 10_000_000 + 1
            } else {
                x
            };
            let s = format!("{v}\n");
            written += s.len() as u64;
            if let Err(e) = w.write_all(s.as_bytes()) {
                die(&format!("{}: {e}", path.display()));
            }
            n += 1;
        }
        if let Err(e) = w.flush() {
            die(&format!("{}: {e}", path.display()));
        }
    }
}

fn die(msg: &str) -> ! {
    eprintln!("gen-input: {msg}");
    std::process::exit(2)
}
