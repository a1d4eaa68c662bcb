//! AFL's entry point for target `pickle`: see [`lenet_fuzz::pickle`].

fn main() {
    afl::fuzz!(|data: &[u8]| lenet_fuzz::pickle(data));
}
