//! A small, safe reader for the Python pickles that hold numpy arrays, such as
//! the classic deeplearning.net `mnist.pkl.gz` (a Python 2 pickle, protocol 2).
//!
//! This is not a general unpickler: it runs a tiny pickle machine that knows the
//! opcodes such files use and only the few callables that rebuild numpy arrays:
//!
//! * `numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b')` followed by
//!   `BUILD` with the state `(version, shape, dtype, is_fortran, rawdata)`;
//! * `numpy.dtype(kind, align, copy)` followed by `BUILD` with its state tuple
//!   (only its byte order `<`, `>`, `|` or `=` matters here);
//! * `_codecs.encode(text, 'latin1')`, how Python 3 writes raw bytes at protocol 2;
//! * `numpy.core.numeric._frombuffer(buffer, dtype, shape, order)` (protocol 5);
//!
//! (`numpy._core.*`, the module names of numpy 2, work as well). Nothing is ever
//! imported or executed: any other global is an error.
//!
//! Opcodes: `PROTO`, `FRAME`, `STOP`, `MARK`, `GLOBAL`, `STACK_GLOBAL`, `REDUCE`,
//! `BUILD`, `BINPUT`, `LONG_BINPUT`, `MEMOIZE`, `BINGET`, `LONG_BINGET`, `NONE`,
//! `NEWTRUE`, `NEWFALSE`, `BININT`, `BININT1`, `BININT2`, `LONG1`, `EMPTY_TUPLE`,
//! `TUPLE`, `TUPLE1`, `TUPLE2`, `TUPLE3`, `EMPTY_LIST`, `LIST`, `APPEND`, `APPENDS`,
//! `SHORT_BINSTRING`, `BINSTRING`, `SHORT_BINBYTES`, `BINBYTES`, `BINBYTES8`,
//! `BYTEARRAY8`, `SHORT_BINUNICODE`, `BINUNICODE`, `BINUNICODE8`.
//!
//! Hostile input is expected: the reader never panics, checks every length
//! against the bytes that remain before it touches them (a `BINSTRING` claiming
//! 4 GB in a 100-byte input is an error and allocates nothing), bounds nesting,
//! and refuses structures whose shared references would expand beyond the size of
//! the input. Byte strings are borrowed from the input, so the 157 MB of pixels of
//! MNIST are never copied by the parser.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

/// The deepest nesting of tuples and lists accepted (MNIST needs 3).
pub const MAX_DEPTH: usize = 100;

/// The highest pickle protocol understood.
pub const HIGHEST_PROTOCOL: u8 = 5;

/// A value read from a pickle. Byte strings and arrays borrow from the input
/// where they can.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    None,
    Bool(bool),
    Int(i64),
    /// A Python 2 `str` (`SHORT_BINSTRING`, `BINSTRING`), `bytes` or `bytearray`.
    Bytes(Cow<'a, [u8]>),
    /// A Python `unicode` / `str` (`BINUNICODE` and friends).
    Str(&'a str),
    Tuple(Vec<Value<'a>>),
    List(Vec<Value<'a>>),
    /// A supported callable that was not called.
    Global(Global),
    Dtype(DType),
    Array(NdArray<'a>),
}

impl<'a> Value<'a> {
    /// A short name of the value's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Bytes(_) => "bytes",
            Value::Str(_) => "str",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Global(_) => "global",
            Value::Dtype(_) => "numpy.dtype",
            Value::Array(_) => "numpy.ndarray",
        }
    }

    /// The items of a tuple or a list.
    pub fn as_sequence(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::Tuple(items) | Value::List(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&NdArray<'a>> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    /// A `str`, or a byte string that is valid UTF-8 (a Python 2 `str`).
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

/// The callables this reader knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Global {
    /// `numpy.core.multiarray._reconstruct`
    Reconstruct,
    /// `numpy.core.numeric._frombuffer`
    FromBuffer,
    /// `numpy.ndarray`
    Ndarray,
    /// `numpy.dtype`
    Dtype,
    /// `_codecs.encode`
    CodecsEncode,
}

impl Global {
    fn lookup(module: &str, name: &str) -> Option<Global> {
        match (module, name) {
            ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => Some(Global::Reconstruct),
            ("numpy.core.numeric" | "numpy._core.numeric", "_frombuffer") => Some(Global::FromBuffer),
            ("numpy" | "numpy.core.multiarray" | "numpy._core.multiarray", "ndarray") => Some(Global::Ndarray),
            ("numpy" | "numpy.core.multiarray" | "numpy._core.multiarray", "dtype") => Some(Global::Dtype),
            ("_codecs", "encode") => Some(Global::CodecsEncode),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Global::Reconstruct => "numpy.core.multiarray._reconstruct",
            Global::FromBuffer => "numpy.core.numeric._frombuffer",
            Global::Ndarray => "numpy.ndarray",
            Global::Dtype => "numpy.dtype",
            Global::CodecsEncode => "_codecs.encode",
        }
    }
}

impl fmt::Display for Global {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The element types supported in arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScalarType {
    Bool,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F32,
    F64,
}

impl ScalarType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            ScalarType::Bool | ScalarType::I8 | ScalarType::U8 => 1,
            ScalarType::I16 | ScalarType::U16 => 2,
            ScalarType::I32 | ScalarType::U32 | ScalarType::F32 => 4,
            ScalarType::I64 | ScalarType::U64 | ScalarType::F64 => 8,
        }
    }

    /// numpy's kind-and-size code, e.g. `f4`.
    pub fn code(self) -> &'static str {
        match self {
            ScalarType::Bool => "b1",
            ScalarType::I8 => "i1",
            ScalarType::I16 => "i2",
            ScalarType::I32 => "i4",
            ScalarType::I64 => "i8",
            ScalarType::U8 => "u1",
            ScalarType::U16 => "u2",
            ScalarType::U32 => "u4",
            ScalarType::U64 => "u8",
            ScalarType::F32 => "f4",
            ScalarType::F64 => "f8",
        }
    }

    fn from_code(code: &str) -> Option<ScalarType> {
        Some(match code {
            "b1" | "?" => ScalarType::Bool,
            "i1" => ScalarType::I8,
            "i2" => ScalarType::I16,
            "i4" => ScalarType::I32,
            "i8" => ScalarType::I64,
            "u1" => ScalarType::U8,
            "u2" => ScalarType::U16,
            "u4" => ScalarType::U32,
            "u8" => ScalarType::U64,
            "f4" => ScalarType::F32,
            "f8" => ScalarType::F64,
            _ => return None,
        })
    }

    pub fn is_float(self) -> bool {
        matches!(self, ScalarType::F32 | ScalarType::F64)
    }
}

/// A numpy dtype: an element type and a byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DType {
    pub scalar: ScalarType,
    /// Meaningless (and kept false) for one-byte types.
    pub big_endian: bool,
}

impl DType {
    pub fn new(scalar: ScalarType, big_endian: bool) -> DType {
        DType { scalar, big_endian: big_endian && scalar.size() > 1 }
    }

    pub fn size(self) -> usize {
        self.scalar.size()
    }

    /// Decode one element from exactly `self.size()` bytes (`None` otherwise).
    pub fn decode(self, b: &[u8]) -> Option<Scalar> {
        fn arr<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
            b.try_into().ok()
        }
        macro_rules! num {
            ($t:ty) => {{
                let a = arr(b)?;
                if self.big_endian {
                    <$t>::from_be_bytes(a)
                } else {
                    <$t>::from_le_bytes(a)
                }
            }};
        }
        Some(match self.scalar {
            ScalarType::Bool => Scalar::Bool(arr::<1>(b)?[0] != 0),
            ScalarType::I8 => Scalar::Int(num!(i8) as i64),
            ScalarType::I16 => Scalar::Int(num!(i16) as i64),
            ScalarType::I32 => Scalar::Int(num!(i32) as i64),
            ScalarType::I64 => Scalar::Int(num!(i64)),
            ScalarType::U8 => Scalar::UInt(num!(u8) as u64),
            ScalarType::U16 => Scalar::UInt(num!(u16) as u64),
            ScalarType::U32 => Scalar::UInt(num!(u32) as u64),
            ScalarType::U64 => Scalar::UInt(num!(u64)),
            ScalarType::F32 => Scalar::Float(num!(f32) as f64),
            ScalarType::F64 => Scalar::Float(num!(f64)),
        })
    }
}

/// numpy's notation: `<f4`, `>i8`, `|u1`.
impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let order = if self.size() == 1 {
            '|'
        } else if self.big_endian {
            '>'
        } else {
            '<'
        };
        write!(f, "{order}{}", self.scalar.code())
    }
}

/// One element of an array, widened.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    UInt(u64),
    /// `f4` values are widened exactly.
    Float(f64),
}

/// A numpy array: its raw bytes in the dtype's byte order, C (row-major) or
/// Fortran (column-major) order as `fortran_order` says.
#[derive(Clone, Debug, PartialEq)]
pub struct NdArray<'a> {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub fortran_order: bool,
    pub data: Cow<'a, [u8]>,
}

impl<'a> NdArray<'a> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len() / self.dtype.size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements in storage order (see `fortran_order`).
    pub fn iter(&self) -> impl Iterator<Item = Scalar> + '_ {
        let dtype = self.dtype;
        self.data.chunks_exact(dtype.size()).filter_map(move |c| dtype.decode(c))
    }

    /// The element at storage position `i`.
    pub fn get(&self, i: usize) -> Option<Scalar> {
        let size = self.dtype.size();
        let start = i.checked_mul(size)?;
        self.dtype.decode(self.data.get(start..start.checked_add(size)?)?)
    }
}

/// Why a pickle could not be read; every variant carries the byte offset of the
/// opcode at fault (`at`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PickleError {
    #[error("truncated at byte {end}: {opcode} at byte {at} needs {needed} more bytes but only {available} remain")]
    Truncated { at: usize, end: usize, opcode: &'static str, needed: u64, available: usize },
    #[error("truncated at byte {at}: the pickle ends without a STOP opcode")]
    NoStop { at: usize },
    #[error("unsupported pickle opcode 0x{opcode:02x} at byte {at}")]
    UnsupportedOpcode { at: usize, opcode: u8 },
    #[error("unsupported pickle protocol {protocol} at byte {at} (at most {HIGHEST_PROTOCOL} is understood)")]
    UnsupportedProtocol { at: usize, protocol: u8 },
    #[error("unsupported global {module}.{name} at byte {at}")]
    UnsupportedGlobal { at: usize, module: String, name: String },
    #[error("stack underflow at byte {at}: {opcode} needs {needed} value(s) above the last MARK, found {found}")]
    StackUnderflow { at: usize, opcode: &'static str, needed: usize, found: usize },
    #[error("{opcode} at byte {at} has no MARK to pair with")]
    MissingMark { at: usize, opcode: &'static str },
    #[error("{opcode} at byte {at} reads memo key {key}, which was never stored")]
    BadMemoKey { at: usize, opcode: &'static str, key: u32 },
    #[error("unsupported dtype {descr:?} at byte {at}")]
    UnsupportedDtype { at: usize, descr: String },
    #[error("array data is {actual} bytes but shape {shape:?} of {dtype} needs {} (at byte {at})", needed_text(*.expected))]
    ArraySize { at: usize, actual: usize, expected: Option<u64>, shape: Vec<usize>, dtype: DType },
    #[error("pickle nests deeper than {MAX_DEPTH} levels at byte {at}")]
    TooDeep { at: usize },
    #[error("pickle at byte {at} expands beyond its own size of {size} bytes (shared or cyclic references)")]
    TooLarge { at: usize, size: usize },
    #[error("{extra} unexpected bytes after STOP at byte {at}")]
    TrailingBytes { at: usize, extra: usize },
    #[error("{opcode} at byte {at}: {message}")]
    Invalid { at: usize, opcode: &'static str, message: String },
}

fn needed_text(expected: Option<u64>) -> String {
    match expected {
        Some(n) => n.to_string(),
        None => "more than 2^64".to_string(),
    }
}

impl PickleError {
    /// Byte offset of the opcode at fault.
    pub fn offset(&self) -> usize {
        match self {
            PickleError::Truncated { at, .. }
            | PickleError::NoStop { at }
            | PickleError::UnsupportedOpcode { at, .. }
            | PickleError::UnsupportedProtocol { at, .. }
            | PickleError::UnsupportedGlobal { at, .. }
            | PickleError::StackUnderflow { at, .. }
            | PickleError::MissingMark { at, .. }
            | PickleError::BadMemoKey { at, .. }
            | PickleError::UnsupportedDtype { at, .. }
            | PickleError::ArraySize { at, .. }
            | PickleError::TooDeep { at }
            | PickleError::TooLarge { at, .. }
            | PickleError::TrailingBytes { at, .. }
            | PickleError::Invalid { at, .. } => *at,
        }
    }
}

/// Read one pickle that spans all of `input` (bytes after `STOP` are an error).
pub fn parse(input: &[u8]) -> Result<Value<'_>, PickleError> {
    Machine::new(input).run()
}

// ---------------------------------------------------------------------------
// The machine.

mod op {
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const NONE: u8 = b'N';
    pub const REDUCE: u8 = b'R';
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const BINUNICODE: u8 = b'X';
    pub const APPEND: u8 = b'a';
    pub const BUILD: u8 = b'b';
    pub const GLOBAL: u8 = b'c';
    pub const APPENDS: u8 = b'e';
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
    pub const LIST: u8 = b'l';
    pub const EMPTY_LIST: u8 = b']';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const PROTO: u8 = 0x80;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const LONG1: u8 = 0x8a;
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES8: u8 = 0x8e;
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const MEMOIZE: u8 = 0x94;
    pub const FRAME: u8 = 0x95;
    pub const BYTEARRAY8: u8 = 0x96;

    pub fn name(op: u8) -> Option<&'static str> {
        Some(match op {
            MARK => "MARK",
            STOP => "STOP",
            BININT => "BININT",
            BININT1 => "BININT1",
            BININT2 => "BININT2",
            NONE => "NONE",
            REDUCE => "REDUCE",
            BINSTRING => "BINSTRING",
            SHORT_BINSTRING => "SHORT_BINSTRING",
            BINUNICODE => "BINUNICODE",
            APPEND => "APPEND",
            BUILD => "BUILD",
            GLOBAL => "GLOBAL",
            APPENDS => "APPENDS",
            BINGET => "BINGET",
            LONG_BINGET => "LONG_BINGET",
            LIST => "LIST",
            EMPTY_LIST => "EMPTY_LIST",
            BINPUT => "BINPUT",
            LONG_BINPUT => "LONG_BINPUT",
            TUPLE => "TUPLE",
            EMPTY_TUPLE => "EMPTY_TUPLE",
            PROTO => "PROTO",
            TUPLE1 => "TUPLE1",
            TUPLE2 => "TUPLE2",
            TUPLE3 => "TUPLE3",
            NEWTRUE => "NEWTRUE",
            NEWFALSE => "NEWFALSE",
            LONG1 => "LONG1",
            BINBYTES => "BINBYTES",
            SHORT_BINBYTES => "SHORT_BINBYTES",
            SHORT_BINUNICODE => "SHORT_BINUNICODE",
            BINUNICODE8 => "BINUNICODE8",
            BINBYTES8 => "BINBYTES8",
            STACK_GLOBAL => "STACK_GLOBAL",
            MEMOIZE => "MEMOIZE",
            FRAME => "FRAME",
            BYTEARRAY8 => "BYTEARRAY8",
            _ => return None,
        })
    }
}

/// A byte string inside the machine: borrowed from the input, or made by
/// `_codecs.encode` (shared, so that memo gets stay cheap).
#[derive(Clone, Debug)]
enum Bytes<'a> {
    Borrowed(&'a [u8]),
    Owned(Rc<[u8]>),
}

impl Bytes<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Borrowed(b) => b,
            Bytes::Owned(b) => b,
        }
    }
}

#[derive(Debug)]
struct Tuple<'a> {
    /// 1 + the deepest tuple inside.
    depth: usize,
    items: Vec<Val<'a>>,
}

/// A value inside the machine. Cloning is cheap (memo gets clone): tuples are
/// shared, and mutable objects (lists, dtypes, arrays, which `BUILD` and
/// `APPEND` change in place) live in an arena and are referred to by index.
#[derive(Clone, Debug)]
enum Val<'a> {
    None,
    Bool(bool),
    Int(i64),
    Bytes(Bytes<'a>),
    Str(&'a str),
    Tuple(Rc<Tuple<'a>>),
    Global(Global),
    Obj(usize),
}

impl Val<'_> {
    fn depth(&self) -> usize {
        match self {
            Val::Tuple(t) => t.depth,
            _ => 0,
        }
    }

    fn type_name(&self, objects: &[Obj<'_>]) -> &'static str {
        match self {
            Val::None => "None",
            Val::Bool(_) => "bool",
            Val::Int(_) => "int",
            Val::Bytes(_) => "bytes",
            Val::Str(_) => "str",
            Val::Tuple(_) => "tuple",
            Val::Global(_) => "global",
            Val::Obj(id) => match objects.get(*id) {
                Some(Obj::List(_)) => "list",
                Some(Obj::Dtype(_)) => "numpy.dtype",
                Some(Obj::Array(_)) => "numpy.ndarray",
                None => "object",
            },
        }
    }

    fn text(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            Val::Bytes(b) => std::str::from_utf8(b.as_slice()).ok(),
            _ => None,
        }
    }

    fn int(&self) -> Option<i64> {
        match self {
            Val::Int(i) => Some(*i),
            Val::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct ArrayState<'a> {
    dtype: DType,
    shape: Vec<usize>,
    fortran_order: bool,
    data: Bytes<'a>,
}

#[derive(Debug)]
enum Obj<'a> {
    List(Vec<Val<'a>>),
    Dtype(DType),
    /// `None` until `BUILD` gives it its state.
    Array(Option<ArrayState<'a>>),
}

struct Machine<'a> {
    input: &'a [u8],
    pos: usize,
    /// Offset and name of the opcode being run.
    at: usize,
    opcode: &'static str,
    stack: Vec<Val<'a>>,
    /// Stack lengths at each open MARK; the last is the fence nothing may pop below.
    marks: Vec<usize>,
    /// A map, not a vector: `LONG_BINPUT 4000000000` must not allocate.
    memo: HashMap<u32, Val<'a>>,
    objects: Vec<Obj<'a>>,
}

type Result<T, E = PickleError> = std::result::Result<T, E>;

impl<'a> Machine<'a> {
    fn new(input: &'a [u8]) -> Self {
        Machine {
            input,
            pos: 0,
            at: 0,
            opcode: "",
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            objects: Vec::new(),
        }
    }

    fn invalid(&self, message: impl Into<String>) -> PickleError {
        PickleError::Invalid { at: self.at, opcode: self.opcode, message: message.into() }
    }

    // -- reading the input --------------------------------------------------

    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let available = self.input.len() - self.pos;
        if n > available as u64 {
            return Err(PickleError::Truncated {
                at: self.at,
                end: self.input.len(),
                opcode: self.opcode,
                needed: n,
                available,
            });
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.input[start..self.pos])
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take_array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take_array()?))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take_array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take_array()?))
    }

    /// A `\n`-terminated line (for `GLOBAL`), without the newline.
    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.input[self.pos..];
        let Some(len) = rest.iter().position(|&b| b == b'\n') else {
            return Err(PickleError::Truncated {
                at: self.at,
                end: self.input.len(),
                opcode: self.opcode,
                needed: rest.len() as u64 + 1,
                available: rest.len(),
            });
        };
        let line = self.take(len as u64 + 1)?;
        std::str::from_utf8(&line[..len]).map_err(|_| self.invalid("module or name is not valid UTF-8"))
    }

    fn utf8(&self, bytes: &'a [u8]) -> Result<&'a str> {
        std::str::from_utf8(bytes).map_err(|e| self.invalid(format!("string is not valid UTF-8 ({e})")))
    }

    // -- the stack ----------------------------------------------------------

    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn underflow(&self, needed: usize) -> PickleError {
        PickleError::StackUnderflow {
            at: self.at,
            opcode: self.opcode,
            needed,
            found: self.stack.len().saturating_sub(self.fence()),
        }
    }

    fn pop(&mut self) -> Result<Val<'a>> {
        if self.stack.len() <= self.fence() {
            return Err(self.underflow(1));
        }
        self.stack.pop().ok_or_else(|| self.underflow(1))
    }

    fn top(&self) -> Result<&Val<'a>> {
        if self.stack.len() <= self.fence() {
            return Err(self.underflow(1));
        }
        self.stack.last().ok_or_else(|| self.underflow(1))
    }

    fn pop_n(&mut self, n: usize) -> Result<Vec<Val<'a>>> {
        if self.stack.len() < self.fence() + n {
            return Err(self.underflow(n));
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }

    /// Everything above the last MARK, and the MARK itself.
    fn pop_mark(&mut self) -> Result<Vec<Val<'a>>> {
        let mark = self.marks.pop().ok_or(PickleError::MissingMark { at: self.at, opcode: self.opcode })?;
        if mark > self.stack.len() {
            return Err(self.invalid("MARK above the top of the stack"));
        }
        Ok(self.stack.split_off(mark))
    }

    fn push(&mut self, v: Val<'a>) {
        self.stack.push(v);
    }

    fn push_tuple(&mut self, items: Vec<Val<'a>>) -> Result<()> {
        let depth = 1 + items.iter().map(Val::depth).max().unwrap_or(0);
        if depth > MAX_DEPTH {
            return Err(PickleError::TooDeep { at: self.at });
        }
        self.push(Val::Tuple(Rc::new(Tuple { depth, items })));
        Ok(())
    }

    fn new_object(&mut self, obj: Obj<'a>) {
        self.objects.push(obj);
        let id = self.objects.len() - 1;
        self.push(Val::Obj(id));
    }

    fn memo_get(&self, key: u32) -> Result<Val<'a>> {
        self.memo.get(&key).cloned().ok_or(PickleError::BadMemoKey { at: self.at, opcode: self.opcode, key })
    }

    fn memo_put(&mut self, key: u32) -> Result<()> {
        let v = self.top()?.clone();
        self.memo.insert(key, v);
        Ok(())
    }

    fn list_mut(&mut self, target: &Val<'a>) -> Result<&mut Vec<Val<'a>>> {
        let name = target.type_name(&self.objects);
        let id = match target {
            Val::Obj(id) if matches!(self.objects.get(*id), Some(Obj::List(_))) => *id,
            _ => return Err(self.invalid(format!("cannot append to a {name}"))),
        };
        match self.objects.get_mut(id) {
            Some(Obj::List(items)) => Ok(items),
            _ => Err(PickleError::Invalid { at: self.at, opcode: self.opcode, message: "not a list".into() }),
        }
    }

    // -- running --------------------------------------------------------------

    fn run(mut self) -> Result<Value<'a>> {
        loop {
            self.at = self.pos;
            let Some(&code) = self.input.get(self.pos) else {
                return Err(PickleError::NoStop { at: self.pos });
            };
            self.pos += 1;
            self.opcode = op::name(code).ok_or(PickleError::UnsupportedOpcode { at: self.at, opcode: code })?;
            match code {
                op::PROTO => {
                    let protocol = self.u8()?;
                    if protocol > HIGHEST_PROTOCOL {
                        return Err(PickleError::UnsupportedProtocol { at: self.at, protocol });
                    }
                }
                op::FRAME => {
                    // Frames only help buffered readers; the whole input is here.
                    self.u64()?;
                }
                op::STOP => return self.finish(),
                op::MARK => self.marks.push(self.stack.len()),
                op::GLOBAL => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = self.global(module, name)?;
                    self.push(Val::Global(g));
                }
                op::STACK_GLOBAL => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Val::Str(module), Val::Str(name)) = (&module, &name) else {
                        return Err(self.invalid("module and name must be strings"));
                    };
                    let g = self.global(module, name)?;
                    self.push(Val::Global(g));
                }
                op::REDUCE => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.reduce(callable, args)?;
                }
                op::BUILD => {
                    let state = self.pop()?;
                    let target = self.top()?.clone();
                    self.build(&target, &state)?;
                }
                op::BINPUT => {
                    let key = self.u8()? as u32;
                    self.memo_put(key)?;
                }
                op::LONG_BINPUT => {
                    let key = self.u32()?;
                    self.memo_put(key)?;
                }
                op::MEMOIZE => {
                    let key = u32::try_from(self.memo.len()).map_err(|_| self.invalid("memo is full"))?;
                    self.memo_put(key)?;
                }
                op::BINGET => {
                    let key = self.u8()? as u32;
                    let v = self.memo_get(key)?;
                    self.push(v);
                }
                op::LONG_BINGET => {
                    let key = self.u32()?;
                    let v = self.memo_get(key)?;
                    self.push(v);
                }
                op::NONE => self.push(Val::None),
                op::NEWTRUE => self.push(Val::Bool(true)),
                op::NEWFALSE => self.push(Val::Bool(false)),
                op::BININT => {
                    let v = i32::from_le_bytes(self.take_array()?);
                    self.push(Val::Int(v as i64));
                }
                op::BININT1 => {
                    let v = self.u8()?;
                    self.push(Val::Int(v as i64));
                }
                op::BININT2 => {
                    let v = self.u16()?;
                    self.push(Val::Int(v as i64));
                }
                op::LONG1 => {
                    let n = self.u8()? as u64;
                    let bytes = self.take(n)?;
                    let v =
                        long_from_le(bytes).ok_or_else(|| self.invalid(format!("{n}-byte integer is too large")))?;
                    self.push(Val::Int(v));
                }
                op::EMPTY_TUPLE => self.push_tuple(Vec::new())?,
                op::TUPLE => {
                    let items = self.pop_mark()?;
                    self.push_tuple(items)?;
                }
                op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                    let items = self.pop_n((code - op::TUPLE1 + 1) as usize)?;
                    self.push_tuple(items)?;
                }
                op::EMPTY_LIST => self.new_object(Obj::List(Vec::new())),
                op::LIST => {
                    let items = self.pop_mark()?;
                    self.new_object(Obj::List(items));
                }
                op::APPEND => {
                    let item = self.pop()?;
                    let target = self.top()?.clone();
                    self.list_mut(&target)?.push(item);
                }
                op::APPENDS => {
                    let items = self.pop_mark()?;
                    let target = self.top()?.clone();
                    self.list_mut(&target)?.extend(items);
                }
                op::SHORT_BINSTRING | op::SHORT_BINBYTES => {
                    let n = self.u8()? as u64;
                    let b = self.take(n)?;
                    self.push(Val::Bytes(Bytes::Borrowed(b)));
                }
                op::BINSTRING => {
                    let n = i32::from_le_bytes(self.take_array()?);
                    if n < 0 {
                        return Err(self.invalid(format!("negative length {n}")));
                    }
                    let b = self.take(n as u64)?;
                    self.push(Val::Bytes(Bytes::Borrowed(b)));
                }
                op::BINBYTES => {
                    let n = self.u32()? as u64;
                    let b = self.take(n)?;
                    self.push(Val::Bytes(Bytes::Borrowed(b)));
                }
                op::BINBYTES8 | op::BYTEARRAY8 => {
                    let n = self.u64()?;
                    let b = self.take(n)?;
                    self.push(Val::Bytes(Bytes::Borrowed(b)));
                }
                op::SHORT_BINUNICODE => {
                    let n = self.u8()? as u64;
                    let b = self.take(n)?;
                    let s = self.utf8(b)?;
                    self.push(Val::Str(s));
                }
                op::BINUNICODE => {
                    let n = self.u32()? as u64;
                    let b = self.take(n)?;
                    let s = self.utf8(b)?;
                    self.push(Val::Str(s));
                }
                op::BINUNICODE8 => {
                    let n = self.u64()?;
                    let b = self.take(n)?;
                    let s = self.utf8(b)?;
                    self.push(Val::Str(s));
                }
                _ => return Err(PickleError::UnsupportedOpcode { at: self.at, opcode: code }),
            }
        }
    }

    fn global(&self, module: &str, name: &str) -> Result<Global> {
        Global::lookup(module, name).ok_or_else(|| PickleError::UnsupportedGlobal {
            at: self.at,
            module: module.to_string(),
            name: name.to_string(),
        })
    }

    fn finish(mut self) -> Result<Value<'a>> {
        let top = self.pop()?;
        if !self.marks.is_empty() {
            return Err(self.invalid(format!("{} MARK(s) left open", self.marks.len())));
        }
        if !self.stack.is_empty() {
            return Err(self.invalid(format!("{} value(s) left on the stack", self.stack.len())));
        }
        if self.pos < self.input.len() {
            return Err(PickleError::TrailingBytes { at: self.at, extra: self.input.len() - self.pos });
        }
        let mut budget = self.input.len();
        self.export(&top, 0, &mut budget)
    }

    // -- the numpy callables ------------------------------------------------

    fn reduce(&mut self, callable: Val<'a>, args: Val<'a>) -> Result<()> {
        let Val::Global(g) = callable else {
            return Err(self.invalid(format!("cannot call a {}", callable.type_name(&self.objects))));
        };
        let Val::Tuple(args) = args else {
            return Err(self.invalid(format!("the arguments of {g} must be a tuple")));
        };
        let args = &args.items;
        match g {
            Global::Reconstruct => {
                if args.len() != 3 {
                    return Err(self.invalid(format!("{g} takes 3 arguments, got {}", args.len())));
                }
                if !matches!(args[0], Val::Global(Global::Ndarray)) {
                    return Err(self.invalid(format!("{g} can only rebuild numpy.ndarray")));
                }
                self.new_object(Obj::Array(None));
            }
            Global::Dtype => {
                let Some(descr) = args.first() else {
                    return Err(self.invalid(format!("{g} needs an argument")));
                };
                let Some(descr) = descr.text() else {
                    return Err(self.invalid(format!("{g} needs a string argument")));
                };
                let dtype = self.parse_dtype(descr)?;
                self.new_object(Obj::Dtype(dtype));
            }
            Global::CodecsEncode => {
                let (Some(Val::Str(text)), Some(encoding)) = (args.first(), args.get(1).and_then(Val::text)) else {
                    return Err(self.invalid(format!("{g} takes a string and an encoding")));
                };
                if args.len() != 2 || !matches!(encoding, "latin1" | "latin-1" | "iso-8859-1" | "iso8859-1") {
                    return Err(self.invalid(format!("{g} is only supported with encoding 'latin1'")));
                }
                let mut out = Vec::with_capacity(text.len());
                for c in text.chars() {
                    let b = u8::try_from(u32::from(c))
                        .map_err(|_| self.invalid(format!("character {c:?} is not in latin1")))?;
                    out.push(b);
                }
                self.push(Val::Bytes(Bytes::Owned(out.into())));
            }
            Global::FromBuffer => {
                // _frombuffer(buffer, dtype, shape, order)
                if args.len() != 4 {
                    return Err(self.invalid(format!("{g} takes 4 arguments, got {}", args.len())));
                }
                let data = self.array_data(&args[0])?;
                let dtype = self.dtype_of(&args[1])?;
                let shape = self.shape(&args[2])?;
                let fortran_order = match args[3].text() {
                    Some("C") => false,
                    Some("F") => true,
                    _ => return Err(self.invalid("array order must be 'C' or 'F'")),
                };
                self.check_size(&shape, dtype, data.as_slice().len())?;
                self.new_object(Obj::Array(Some(ArrayState { dtype, shape, fortran_order, data })));
            }
            Global::Ndarray => return Err(self.invalid(format!("calling {g} directly is not supported"))),
        }
        Ok(())
    }

    fn parse_dtype(&self, descr: &str) -> Result<DType> {
        let unsupported = || PickleError::UnsupportedDtype { at: self.at, descr: descr.to_string() };
        let (order, code) = match descr.as_bytes().first() {
            Some(c @ (b'<' | b'>' | b'|' | b'=')) => (Some(*c), &descr[1..]),
            _ => (None, descr),
        };
        let scalar = ScalarType::from_code(code).ok_or_else(unsupported)?;
        let big_endian = match order {
            Some(b'>') => true,
            Some(b'<') => false,
            _ => cfg!(target_endian = "big"),
        };
        Ok(DType::new(scalar, big_endian))
    }

    fn build(&mut self, target: &Val<'a>, state: &Val<'a>) -> Result<()> {
        let target_name = target.type_name(&self.objects);
        let Val::Obj(id) = *target else {
            return Err(self.invalid(format!("cannot set the state of a {target_name}")));
        };
        let Val::Tuple(state) = state else {
            return Err(self.invalid(format!("the state of a {target_name} must be a tuple")));
        };
        let items = &state.items;
        match self.objects.get(id) {
            Some(Obj::Dtype(old)) => {
                let old = *old;
                let dtype = self.dtype_state(old, items)?;
                self.objects[id] = Obj::Dtype(dtype);
            }
            Some(Obj::Array(_)) => {
                let array = self.array_state(items)?;
                self.objects[id] = Obj::Array(Some(array));
            }
            _ => return Err(self.invalid(format!("cannot set the state of a {target_name}"))),
        }
        Ok(())
    }

    /// `dtype.__setstate__`: (version, endian, subarray, names, fields, elsize,
    /// alignment, flags[, metadata]) or one of its older, shorter forms.
    fn dtype_state(&self, old: DType, items: &[Val<'a>]) -> Result<DType> {
        let (endian, unsupported_fields) = match items.len() {
            5 => (&items[0], &items[1..3]),
            6 => (&items[1], &items[2..4]),
            7..=9 => (&items[1], &items[2..5]),
            n => return Err(self.invalid(format!("a dtype state has 5 to 9 items, got {n}"))),
        };
        if unsupported_fields.iter().any(|v| !matches!(v, Val::None)) {
            return Err(self.invalid("structured and subarray dtypes are not supported"));
        }
        let big_endian = match endian.text() {
            Some("<") => false,
            Some(">") => true,
            Some("=") => cfg!(target_endian = "big"),
            Some("|") if old.size() == 1 => false,
            Some(other) => {
                return Err(self.invalid(format!("byte order {other:?} is not valid for {}", old.scalar.code())));
            }
            None => return Err(self.invalid("a dtype's byte order must be a string")),
        };
        Ok(DType::new(old.scalar, big_endian))
    }

    /// `ndarray.__setstate__`: (version, shape, dtype, is_fortran, rawdata) or
    /// the older (shape, dtype, is_fortran, rawdata).
    fn array_state(&self, items: &[Val<'a>]) -> Result<ArrayState<'a>> {
        let items = match items.len() {
            5 => &items[1..],
            4 => items,
            n => return Err(self.invalid(format!("an array state has 4 or 5 items, got {n}"))),
        };
        let shape = self.shape(&items[0])?;
        let dtype = self.dtype_of(&items[1])?;
        let fortran_order = match items[2].int() {
            Some(0) => false,
            Some(1) => true,
            _ => return Err(self.invalid("is_fortran must be a bool")),
        };
        let data = self.array_data(&items[3])?;
        self.check_size(&shape, dtype, data.as_slice().len())?;
        Ok(ArrayState { dtype, shape, fortran_order, data })
    }

    fn shape(&self, v: &Val<'a>) -> Result<Vec<usize>> {
        let Val::Tuple(t) = v else {
            return Err(self.invalid(format!("an array shape must be a tuple, not a {}", v.type_name(&self.objects))));
        };
        t.items
            .iter()
            .map(|d| match d.int() {
                Some(n) if n >= 0 => {
                    usize::try_from(n).map_err(|_| self.invalid(format!("dimension {n} is too large")))
                }
                _ => Err(self.invalid("array dimensions must be non-negative integers")),
            })
            .collect()
    }

    fn dtype_of(&self, v: &Val<'a>) -> Result<DType> {
        if let Val::Obj(id) = v {
            if let Some(Obj::Dtype(d)) = self.objects.get(*id) {
                return Ok(*d);
            }
        }
        Err(self.invalid(format!("expected a numpy.dtype, found a {}", v.type_name(&self.objects))))
    }

    fn array_data(&self, v: &Val<'a>) -> Result<Bytes<'a>> {
        match v {
            Val::Bytes(b) => Ok(b.clone()),
            Val::Obj(id) if matches!(self.objects.get(*id), Some(Obj::List(_))) => {
                Err(self.invalid("arrays of Python objects are not supported"))
            }
            other => Err(self.invalid(format!("array data must be bytes, not a {}", other.type_name(&self.objects)))),
        }
    }

    fn check_size(&self, shape: &[usize], dtype: DType, actual: usize) -> Result<()> {
        let expected = shape.iter().try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d as u64));
        if expected != Some(actual as u64) {
            return Err(PickleError::ArraySize { at: self.at, actual, expected, shape: shape.to_vec(), dtype });
        }
        Ok(())
    }

    // -- turning machine values into public ones -------------------------------

    /// `budget` bounds the nodes and owned bytes produced, so that a small
    /// pickle sharing a tuple many times cannot expand exponentially; `depth`
    /// bounds nesting, which also stops cycles (a list that contains itself).
    fn export(&self, v: &Val<'a>, depth: usize, budget: &mut usize) -> Result<Value<'a>> {
        if depth > MAX_DEPTH {
            return Err(PickleError::TooDeep { at: self.at });
        }
        self.spend(budget, 1)?;
        Ok(match v {
            Val::None => Value::None,
            Val::Bool(b) => Value::Bool(*b),
            Val::Int(i) => Value::Int(*i),
            Val::Bytes(b) => Value::Bytes(self.export_bytes(b, budget)?),
            Val::Str(s) => Value::Str(s),
            Val::Global(g) => Value::Global(*g),
            Val::Tuple(t) => Value::Tuple(self.export_all(&t.items, depth, budget)?),
            Val::Obj(id) => match self.objects.get(*id) {
                Some(Obj::List(items)) => Value::List(self.export_all(items, depth, budget)?),
                Some(Obj::Dtype(d)) => Value::Dtype(*d),
                Some(Obj::Array(Some(a))) => {
                    self.spend(budget, a.shape.len())?;
                    Value::Array(NdArray {
                        dtype: a.dtype,
                        shape: a.shape.clone(),
                        fortran_order: a.fortran_order,
                        data: self.export_bytes(&a.data, budget)?,
                    })
                }
                Some(Obj::Array(None)) => return Err(self.invalid("an array was never given its state by BUILD")),
                None => return Err(self.invalid("dangling object reference")),
            },
        })
    }

    fn export_all(&self, items: &[Val<'a>], depth: usize, budget: &mut usize) -> Result<Vec<Value<'a>>> {
        items.iter().map(|x| self.export(x, depth + 1, budget)).collect()
    }

    fn export_bytes(&self, b: &Bytes<'a>, budget: &mut usize) -> Result<Cow<'a, [u8]>> {
        Ok(match b {
            Bytes::Borrowed(s) => Cow::Borrowed(*s),
            Bytes::Owned(v) => {
                self.spend(budget, v.len())?;
                Cow::Owned(v.to_vec())
            }
        })
    }

    fn spend(&self, budget: &mut usize, n: usize) -> Result<()> {
        *budget = budget.checked_sub(n).ok_or(PickleError::TooLarge { at: self.at, size: self.input.len() })?;
        Ok(())
    }
}

/// A little-endian two's-complement integer of at most 8 bytes (`LONG1`).
fn long_from_le(bytes: &[u8]) -> Option<i64> {
    if bytes.len() > 8 {
        return None;
    }
    let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
    let mut buf = if negative { [0xffu8; 8] } else { [0u8; 8] };
    buf[..bytes.len()].copy_from_slice(bytes);
    Some(i64::from_le_bytes(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written by numpy 2.4 / Python 3.11: `pickle.dumps(obj, protocol=p)`.

    /// `np.arange(6, dtype='>i2').reshape(2, 3)`, protocol 2 (data via `_codecs.encode`).
    const P2_BE_I2: &[u8] = b"\x80\x02cnumpy._core.multiarray\x0a_reconstruct\x0aq\x00cnumpy\x0andarray\x0aq\x01K\x00\x85q\x02c_codecs\x0aencode\x0aq\x03X\x01\x00\x00\x00bq\x04X\x06\x00\x00\x00latin1q\x05\x86q\x06Rq\x07\x87q\x08Rq\x09(K\x01K\x02K\x03\x86q\x0acnumpy\x0adtype\x0aq\x0bX\x02\x00\x00\x00i2q\x0c\x89\x88\x87q\x0dRq\x0e(K\x03X\x01\x00\x00\x00>q\x0fNNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tq\x10b\x89h\x03X\x0c\x00\x00\x00\x00\x00\x00\x01\x00\x02\x00\x03\x00\x04\x00\x05q\x11h\x05\x86q\x12Rq\x13tq\x14b.";
    /// `np.array([[1, 2], [3, 255]], dtype='u1')`, protocol 3.
    const P3_U1: &[u8] = b"\x80\x03cnumpy._core.multiarray\x0a_reconstruct\x0aq\x00cnumpy\x0andarray\x0aq\x01K\x00\x85q\x02C\x01bq\x03\x87q\x04Rq\x05(K\x01K\x02K\x02\x86q\x06cnumpy\x0adtype\x0aq\x07X\x02\x00\x00\x00u1q\x08\x89\x88\x87q\x09Rq\x0a(K\x03X\x01\x00\x00\x00|q\x0bNNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tq\x0cb\x89C\x04\x01\x02\x03\xffq\x0dtq\x0eb.";
    /// `np.asfortranarray(np.arange(6, dtype='f8').reshape(2, 3))`, protocol 4.
    const P4_F8_FORTRAN: &[u8] = b"\x80\x04\x95\xbb\x00\x00\x00\x00\x00\x00\x00\x8c\x16numpy._core.multiarray\x94\x8c\x0c_reconstruct\x94\x93\x94\x8c\x05numpy\x94\x8c\x07ndarray\x94\x93\x94K\x00\x85\x94C\x01b\x94\x87\x94R\x94(K\x01K\x02K\x03\x86\x94h\x03\x8c\x05dtype\x94\x93\x94\x8c\x02f8\x94\x89\x88\x87\x94R\x94(K\x03\x8c\x01<\x94NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t\x94b\x88C0\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x08@\x00\x00\x00\x00\x00\x00\xf0?\x00\x00\x00\x00\x00\x00\x10@\x00\x00\x00\x00\x00\x00\x00@\x00\x00\x00\x00\x00\x00\x14@\x94t\x94b.";
    /// `np.array([0.5, -1.25, 3.0], dtype='f4')`, protocol 5 (`_frombuffer`).
    const P5_F4: &[u8] = b"\x80\x05\x95\x80\x00\x00\x00\x00\x00\x00\x00\x8c\x13numpy._core.numeric\x94\x8c\x0b_frombuffer\x94\x93\x94(\x96\x0c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00?\x00\x00\xa0\xbf\x00\x00@@\x94\x8c\x05numpy\x94\x8c\x05dtype\x94\x93\x94\x8c\x02f4\x94\x89\x88\x87\x94R\x94(K\x03\x8c\x01<\x94NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t\x94bK\x03\x85\x94\x8c\x01C\x94t\x94R\x94.";
    /// `[np.zeros(2, '?'), (1, None, True, -70000, 'hi')]`, protocol 2.
    const P2_LIST: &[u8] = b"\x80\x02]q\x00(cnumpy._core.multiarray\x0a_reconstruct\x0aq\x01cnumpy\x0andarray\x0aq\x02K\x00\x85q\x03c_codecs\x0aencode\x0aq\x04X\x01\x00\x00\x00bq\x05X\x06\x00\x00\x00latin1q\x06\x86q\x07Rq\x08\x87q\x09Rq\x0a(K\x01K\x02\x85q\x0bcnumpy\x0adtype\x0aq\x0cX\x02\x00\x00\x00b1q\x0d\x89\x88\x87q\x0eRq\x0f(K\x03X\x01\x00\x00\x00|q\x10NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tq\x11b\x89h\x04X\x02\x00\x00\x00\x00\x00q\x12h\x06\x86q\x13Rq\x14tq\x15b(K\x01N\x88J\x90\xee\xfe\xffX\x02\x00\x00\x00hiq\x16tq\x17e.";
    /// `(np.zeros((0, 3), '<i8'), np.array(7, '>u4'))`, protocol 4.
    const P4_EMPTY_SCALAR: &[u8] = b"\x80\x04\x95\xd0\x00\x00\x00\x00\x00\x00\x00\x8c\x16numpy._core.multiarray\x94\x8c\x0c_reconstruct\x94\x93\x94\x8c\x05numpy\x94\x8c\x07ndarray\x94\x93\x94K\x00\x85\x94C\x01b\x94\x87\x94R\x94(K\x01K\x00K\x03\x86\x94h\x03\x8c\x05dtype\x94\x93\x94\x8c\x02i8\x94\x89\x88\x87\x94R\x94(K\x03\x8c\x01<\x94NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t\x94b\x89C\x00\x94t\x94bh\x02h\x05K\x00\x85\x94h\x07\x87\x94R\x94(K\x01)h\x0c\x8c\x02u4\x94\x89\x88\x87\x94R\x94(K\x03\x8c\x01>\x94NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t\x94b\x89C\x04\x00\x00\x00\x07\x94t\x94b\x86\x94.";

    fn array(v: &Value<'_>) -> NdArray<'static> {
        let a = v.as_array().unwrap_or_else(|| panic!("not an array: {v:?}"));
        NdArray { dtype: a.dtype, shape: a.shape.clone(), fortran_order: a.fortran_order, data: a.data.to_vec().into() }
    }

    #[test]
    fn protocol2_big_endian_from_python3() {
        let a = array(&parse(P2_BE_I2).unwrap());
        assert_eq!(a.dtype.to_string(), ">i2");
        assert_eq!(a.shape, [2, 3]);
        assert!(!a.fortran_order);
        assert_eq!(a.iter().collect::<Vec<_>>(), (0..6).map(Scalar::Int).collect::<Vec<_>>());
    }

    #[test]
    fn protocol3_u1() {
        let a = array(&parse(P3_U1).unwrap());
        assert_eq!(a.dtype.to_string(), "|u1");
        assert_eq!(a.shape, [2, 2]);
        assert_eq!(&a.data[..], [1, 2, 3, 255]);
        assert_eq!(a.get(3), Some(Scalar::UInt(255)));
        assert_eq!(a.get(4), None);
    }

    #[test]
    fn protocol4_fortran_f8() {
        let a = array(&parse(P4_F8_FORTRAN).unwrap());
        assert_eq!(a.dtype.to_string(), "<f8");
        assert!(a.fortran_order);
        let v: Vec<_> = a.iter().collect();
        assert_eq!(v, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0].map(Scalar::Float));
    }

    #[test]
    fn protocol5_frombuffer() {
        let a = array(&parse(P5_F4).unwrap());
        assert_eq!(a.dtype.to_string(), "<f4");
        assert_eq!(a.shape, [3]);
        assert_eq!(a.iter().collect::<Vec<_>>(), [0.5, -1.25, 3.0].map(Scalar::Float));
    }

    #[test]
    fn lists_and_plain_values() {
        let v = parse(P2_LIST).unwrap();
        let Value::List(items) = &v else { panic!("{v:?}") };
        assert_eq!(items.len(), 2);
        let a = array(&items[0]);
        assert_eq!(a.dtype.to_string(), "|b1");
        assert_eq!(a.iter().collect::<Vec<_>>(), [Scalar::Bool(false); 2]);
        assert_eq!(
            items[1],
            Value::Tuple(vec![Value::Int(1), Value::None, Value::Bool(true), Value::Int(-70000), Value::Str("hi")])
        );
    }

    #[test]
    fn empty_and_zero_dimensional_arrays() {
        let v = parse(P4_EMPTY_SCALAR).unwrap();
        let items = v.as_sequence().unwrap();
        let empty = array(&items[0]);
        assert_eq!(empty.shape, [0, 3]);
        assert!(empty.is_empty());
        let scalar = array(&items[1]);
        assert!(scalar.shape.is_empty());
        assert_eq!(scalar.iter().collect::<Vec<_>>(), [Scalar::UInt(7)]);
    }

    #[test]
    fn huge_claimed_length_is_an_error_before_allocation() {
        let mut p = b"\x80\x02T\xff\xff\xff\x7f".to_vec();
        p.resize(100, b'N');
        let (r, peak) = crate::counting_alloc::peak_during(|| parse(&p));
        // A parse of 100 bytes needs a few small tables, not the 2 GiB the string claims.
        assert!(peak < 64 << 10, "parsing 100 bytes allocated {peak} bytes at once");
        let e = r.unwrap_err();
        assert!(matches!(e, PickleError::Truncated { at: 2, end: 100, needed: 0x7fff_ffff, .. }), "{e}");
        assert!(e.to_string().starts_with("truncated at byte 100"), "{e}");
        let p = b"\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\xff.";
        assert!(matches!(parse(p), Err(PickleError::Truncated { .. })));
        let p = b"\x80\x02T\xff\xff\xff\xff.";
        assert!(matches!(parse(p), Err(PickleError::Invalid { .. })));
    }

    #[test]
    fn error_messages_name_the_byte() {
        let e = parse(b"\x80\x02K\x01d.").unwrap_err();
        assert_eq!(e.to_string(), "unsupported pickle opcode 0x64 at byte 4");
        assert_eq!(e.offset(), 4);
        let e = parse(b"\x80\x02cos\nsystem\n.").unwrap_err();
        assert_eq!(e.to_string(), "unsupported global os.system at byte 2");
        assert_eq!(parse(b"\x80\x09N.").unwrap_err(), PickleError::UnsupportedProtocol { at: 0, protocol: 9 });
        assert_eq!(parse(b"\x80\x02N").unwrap_err(), PickleError::NoStop { at: 3 });
        assert!(matches!(parse(b"\x80\x02.").unwrap_err(), PickleError::StackUnderflow { at: 2, .. }));
        assert!(matches!(parse(b"\x80\x02K\x01t.").unwrap_err(), PickleError::MissingMark { at: 4, .. }));
        assert!(matches!(parse(b"\x80\x02h\x03.").unwrap_err(), PickleError::BadMemoKey { key: 3, .. }));
        assert!(matches!(parse(b"N.N").unwrap_err(), PickleError::TrailingBytes { extra: 1, .. }));
        assert!(matches!(parse(b"NN.").unwrap_err(), PickleError::Invalid { .. }));
        // Nothing below a MARK can be popped until the MARK is closed.
        assert!(matches!(parse(b"K\x01(\x85t.").unwrap_err(), PickleError::StackUnderflow { .. }));
    }

    #[test]
    fn wrong_array_size_is_reported() {
        // P3_U1 with 3 data bytes instead of 4.
        let mut p = P3_U1.to_vec();
        let i = p.windows(6).position(|w| w == b"C\x04\x01\x02\x03\xff").unwrap();
        p.splice(i..i + 6, *b"C\x03\x01\x02\x03");
        let e = parse(&p).unwrap_err();
        assert!(e.to_string().starts_with("array data is 3 bytes but shape [2, 2] of |u1 needs 4"), "{e}");
    }

    #[test]
    fn nesting_cycles_and_sharing_are_bounded() {
        // 100000 nested tuples: an error, not a stack overflow.
        let mut p = b")".to_vec();
        p.extend(std::iter::repeat_n(0x85, 100_000));
        p.push(b'.');
        assert!(matches!(parse(&p), Err(PickleError::TooDeep { .. })));
        // A list that contains itself.
        assert!(matches!(parse(b"]q\x00h\x00a."), Err(PickleError::TooDeep { .. } | PickleError::TooLarge { .. })));
        // A tuple shared twice per level, 60 levels: 2^60 nodes if expanded.
        let mut p = b"N".to_vec();
        for _ in 0..60 {
            p.extend(b"q\x00h\x00\x86");
        }
        p.push(b'.');
        assert!(matches!(parse(&p), Err(PickleError::TooLarge { .. })));
    }

    #[test]
    fn long1_and_memo() {
        let v =
            parse(b"\x80\x02(\x8a\x02\x00\x80\x8a\x00\x8a\x01\xffr\x00\x00\x01\x00j\x00\x00\x01\x00\x94t.").unwrap();
        assert_eq!(v, Value::Tuple(vec![Value::Int(-32768), Value::Int(0), Value::Int(-1), Value::Int(-1)]));
        assert!(parse(b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.").is_err());
    }
}
