//! The pickle reader against hostile input: it must return `Ok` or `Err`, never
//! panic, hang, overflow its stack or allocate what the input cannot hold.
//! Cases per property: `PROPTEST_CASES` (default 512).

use proptest::prelude::*;

use lenet::internal::pickle::{parse, PickleError, Scalar, Value};

#[path = "common/byte_edits.rs"]
mod byte_edits;
#[path = "common/counting_alloc.rs"]
mod counting_alloc;
#[path = "common/fuzz_cases.rs"]
mod fuzz_cases;
use counting_alloc::peak_during;

// ---------------------------------------------------------------------------
// A minimal writer for valid pickles of numpy arrays, the way Python 2 wrote
// `mnist.pkl.gz` (protocol 2, `_reconstruct` + `BUILD`, memoized globals).

struct Writer {
    out: Vec<u8>,
    memo: u8,
}

impl Writer {
    fn new() -> Self {
        Writer { out: vec![0x80, 2], memo: 0 }
    }

    fn put(&mut self) {
        self.memo = self.memo.wrapping_add(1);
        self.out.extend([b'q', self.memo]);
    }

    fn int(&mut self, v: u16) {
        if v < 256 {
            self.out.extend([b'K', v as u8]);
        } else {
            self.out.push(b'M');
            self.out.extend(v.to_le_bytes());
        }
    }

    fn short_string(&mut self, s: &[u8]) {
        self.out.extend([b'U', s.len() as u8]);
        self.out.extend(s);
    }

    fn array(&mut self, descr: &str, shape: &[u16], fortran: bool, data: &[u8]) {
        self.out.extend(b"cnumpy.core.multiarray\n_reconstruct\n");
        self.put();
        self.out.extend(b"cnumpy\nndarray\n");
        self.put();
        self.int(0);
        self.out.push(0x85);
        self.short_string(b"b");
        self.out.extend([0x87, b'R']);
        self.put();
        self.out.push(b'(');
        self.int(1);
        self.out.push(b'(');
        for &d in shape {
            self.int(d);
        }
        self.out.push(b't');
        self.out.extend(b"cnumpy\ndtype\n");
        self.put();
        self.short_string(&descr.as_bytes()[1..]);
        self.int(0);
        self.int(1);
        self.out.extend([0x87, b'R']);
        self.put();
        self.out.push(b'(');
        self.int(3);
        self.short_string(&descr.as_bytes()[..1]);
        self.out.extend(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xff");
        self.int(0);
        self.out.extend(b"tb");
        self.out.push(if fortran { 0x88 } else { 0x89 });
        self.out.push(b'T');
        self.out.extend((data.len() as u32).to_le_bytes());
        self.out.extend(data);
        self.out.extend(b"tb");
    }

    fn finish(mut self, tuple_op: u8) -> Vec<u8> {
        self.out.extend([tuple_op, b'.']);
        self.out
    }
}

/// `((X, y), (X, y), (X, y))` with X float32 [2, 3] and y int64 [2], as MNIST.
fn mnist_like() -> Vec<u8> {
    let mut w = Writer::new();
    for split in 0..3u8 {
        let x: Vec<u8> = (0..6).flat_map(|i| ((split * 6 + i) as f32 / 256.0).to_le_bytes()).collect();
        w.array("<f4", &[2, 3], false, &x);
        let y: Vec<u8> = [split as i64, 9].iter().flat_map(|v| v.to_le_bytes()).collect();
        w.array("<i8", &[2], false, &y);
        w.out.push(0x86);
        w.put();
    }
    w.finish(0x87)
}

/// Touch everything a caller might touch in a parsed value.
fn walk(v: &Value<'_>) -> usize {
    match v {
        Value::Tuple(items) | Value::List(items) => items.iter().map(walk).sum::<usize>() + 1,
        Value::Array(a) => {
            let n = a.iter().count();
            assert_eq!(n, a.len());
            assert_eq!(a.shape.iter().product::<usize>(), n);
            let _ = a.get(n);
            let _ = a.dtype.to_string();
            n
        }
        other => {
            let _ = (other.as_int(), other.as_text(), other.type_name());
            1
        }
    }
}

/// What a parse may allocate at once: its value's tables and at most a copy of the
/// input (an array's bytes), never what a length field claims.
fn allocation_bound(input_len: usize) -> usize {
    64 * 1024 + 16 * input_len
}

fn check(bytes: &[u8]) -> Result<usize, PickleError> {
    let (r, peak) = peak_during(|| parse(bytes));
    assert!(peak <= allocation_bound(bytes.len()), "parsing {} bytes allocated {peak} at once", bytes.len());
    if let Err(e) = &r {
        // Every error renders, and points inside (or just past) the input.
        assert!(!e.to_string().is_empty());
        assert!(e.offset() <= bytes.len(), "{e} (input is {} bytes)", bytes.len());
    }
    r.map(|v| walk(&v))
}

/// Opcodes with plausible arguments, to get deeper into the machine than random
/// bytes do: wrong types for REDUCE and BUILD, memo misuse, unbalanced MARKs,
/// absurd lengths.
fn token() -> impl Strategy<Value = Vec<u8>> {
    let fixed = prop::sample::select(vec![
        &b"("[..],
        b")",
        b"t",
        b"\x85",
        b"\x86",
        b"\x87",
        b"N",
        b"\x88",
        b"\x89",
        b"R",
        b"b",
        b"a",
        b"e",
        b"]",
        b"l",
        b"\x94",
        b"\x93",
        b".",
        b"cnumpy.core.multiarray\n_reconstruct\n",
        b"cnumpy\nndarray\n",
        b"cnumpy\ndtype\n",
        b"c_codecs\nencode\n",
        b"cnumpy.core.numeric\n_frombuffer\n",
        b"U\x01b",
        b"U\x02f4",
        b"U\x02i8",
        b"U\x02u1",
        b"U\x01<",
        b"U\x01>",
        b"U\x01|",
        b"X\x06\x00\x00\x00latin1",
        b"\x8c\x01C",
        b"K\x00",
        b"K\x01",
        b"K\x03",
        b"J\xff\xff\xff\xff",
        b"T\xff\xff\xff\x7f",
        b"\x8e\xff\xff\xff\xff\xff\xff\xff\xff",
        b"r\xff\xff\xff\xff",
        b"j\xff\xff\xff\xff",
    ])
    .prop_map(|t| t.to_vec());
    let with_arg =
        (0u8..8, any::<u8>(), prop::collection::vec(any::<u8>(), 0..12)).prop_map(|(kind, k, data)| match kind {
            0 => vec![b'q', k % 8],
            1 => vec![b'h', k % 8],
            2 => vec![b'K', k],
            3 => vec![b'M', k, k],
            4 => [&[b'U', data.len() as u8][..], &data].concat(),
            5 => [&[b'C', data.len() as u8][..], &data].concat(),
            6 => [&[b'T'][..], &(data.len() as u32).to_le_bytes(), &data].concat(),
            _ => [&[0x8a, data.len() as u8][..], &data].concat(),
        });
    prop_oneof![3 => fixed, 1 => with_arg]
}

proptest! {
    #![proptest_config(fuzz_cases::config())]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = check(&bytes);
    }

    #[test]
    fn random_bytes_after_a_header_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = check(&[&b"\x80\x02"[..], &bytes].concat());
    }

    #[test]
    fn opcode_soup_never_panics(tokens in prop::collection::vec(token(), 0..64)) {
        let mut bytes = b"\x80\x02".to_vec();
        for t in &tokens {
            bytes.extend(t);
        }
        let _ = check(&bytes);
        bytes.push(b'.');
        let _ = check(&bytes);
    }

    #[test]
    fn mutations_of_a_valid_pickle_never_panic(mutations in prop::collection::vec(byte_edits::byte_edit(), 1..8)) {
        let mut bytes = mnist_like();
        for m in &mutations {
            byte_edits::apply(&mut bytes, m);
        }
        let _ = check(&bytes);
    }

    #[test]
    fn valid_arrays_round_trip(
        descr in prop::sample::select(vec!["<f4", ">f4", "<f8", ">f8", "<i8", ">i8", "<i4", ">i4", "|u1", "|i1", "<u2", ">u8", "|b1"]),
        shape in prop::collection::vec(0u16..5, 0..4),
        fortran in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let size: usize = descr[2..].parse().unwrap();
        let n: usize = shape.iter().map(|&d| d as usize).product();
        let data: Vec<u8> = (0..n * size).map(|i| (seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64) >> 7) as u8).collect();
        let data: Vec<u8> = if descr == "|b1" { data.iter().map(|b| b & 1).collect() } else { data };
        let mut w = Writer::new();
        w.array(descr, &shape, fortran, &data);
        let bytes = w.finish(0x85);
        let v = parse(&bytes).unwrap();
        let Value::Tuple(items) = &v else { panic!("{v:?}") };
        let a = items[0].as_array().unwrap();
        prop_assert_eq!(a.dtype.to_string(), descr);
        prop_assert_eq!(a.shape.iter().map(|&d| d as u16).collect::<Vec<_>>(), shape);
        prop_assert_eq!(a.fortran_order, fortran);
        prop_assert_eq!(&a.data[..], &data[..]);
        prop_assert_eq!(a.iter().count(), n);
    }
}

// ---------------------------------------------------------------------------
// Exhaustive small neighbourhoods of the valid pickle.

#[test]
fn the_valid_pickle_parses() {
    let bytes = mnist_like();
    let v = parse(&bytes).unwrap();
    let splits = v.as_sequence().unwrap();
    assert_eq!(splits.len(), 3);
    let pair = splits[2].as_sequence().unwrap();
    let x = pair[0].as_array().unwrap();
    assert_eq!(x.shape, [2, 3]);
    assert_eq!(x.get(5), Some(Scalar::Float(17.0 / 256.0)));
    let y = pair[1].as_array().unwrap();
    assert_eq!(y.iter().collect::<Vec<_>>(), [Scalar::Int(2), Scalar::Int(9)]);
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = mnist_like();
    for n in 0..bytes.len() {
        let e = parse(&bytes[..n]).unwrap_err();
        assert!(
            matches!(
                e,
                PickleError::Truncated { .. } | PickleError::NoStop { .. } | PickleError::StackUnderflow { .. }
            ),
            "{n}: {e}"
        );
    }
}

#[test]
fn every_single_byte_substitution_is_handled() {
    let bytes = mnist_like();
    let mut ok = 0;
    for i in 0..bytes.len() {
        let mut m = bytes.clone();
        for v in 0..=255u8 {
            m[i] = v;
            ok += check(&m).is_ok() as usize;
        }
    }
    // Data bytes and integer arguments can change freely.
    assert!(ok > 0);
}

#[test]
fn every_single_byte_deletion_and_duplication_is_handled() {
    let bytes = mnist_like();
    for i in 0..bytes.len() {
        let mut m = bytes.clone();
        m.remove(i);
        let _ = check(&m);
        let mut m = bytes.clone();
        m.insert(i, bytes[i]);
        let _ = check(&m);
    }
}

// ---------------------------------------------------------------------------
// Regressions and hand-made hostile inputs.

#[test]
fn huge_lengths_allocate_nothing() {
    for p in [
        &b"\x80\x02T\xff\xff\xff\x7f"[..],
        b"\x80\x02X\xff\xff\xff\xff",
        b"\x80\x04B\xff\xff\xff\xff",
        b"\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x80\x05\x96\xff\xff\xff\xff\xff\xff\xff\x7f",
        b"\x80\x04\x8d\x00\x00\x00\x00\x00\x00\x00\x80",
        b"\x80\x04\x95\xff\xff\xff\xff\xff\xff\xff\xffN.",
    ] {
        let mut p = p.to_vec();
        p.resize(100, 0);
        let (r, peak) = peak_during(|| parse(&p));
        assert!(r.is_err());
        assert!(peak < 64 * 1024, "{p:?}: {peak} bytes allocated at once");
    }
    // A memo key of 4 billion needs no 4-billion-entry table.
    let (r, peak) = peak_during(|| parse(b"Nr\xff\xff\xff\xffj\xff\xff\xff\xff\x86."));
    assert_eq!(r.unwrap(), Value::Tuple(vec![Value::None, Value::None]));
    assert!(peak < 64 * 1024, "memo key 4e9: {peak} bytes allocated at once");
}

#[test]
fn array_with_huge_shape_is_an_error() {
    // shape (65535, 65535, 65535, 65535, 65535) of f8 overflows u64.
    let mut w = Writer::new();
    w.array("<f8", &[65535; 5], false, b"");
    let e = parse(&w.finish(0x85)).unwrap_err();
    assert!(e.to_string().contains("needs more than 2^64"), "{e}");
}

#[test]
fn build_state_aimed_at_the_wrong_objects() {
    // BUILD on an int, REDUCE of a non-global, APPEND to a tuple, dtype 'c16'.
    for p in [
        &b"K\x01)b."[..],
        b"K\x01)R.",
        b")K\x01a.",
        b"cnumpy\ndtype\nU\x03c16\x85R.",
        b"cnumpy\nndarray\n)R.",
        b"cnumpy.core.multiarray\n_reconstruct\nK\x00K\x00K\x00\x87R.",
        b"c_codecs\nencode\nX\x02\x00\x00\x00\xc4\x80X\x06\x00\x00\x00latin1\x86R.",
        b"\x8c\x05numpy\x8c\x02os\x93.",
    ] {
        let e = parse(p).unwrap_err();
        assert!(!matches!(e, PickleError::Truncated { .. }), "{e}");
    }
}
