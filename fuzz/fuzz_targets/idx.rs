//! AFL's entry point for target `idx`: see [`lenet_fuzz::idx`].

fn main() {
    afl::fuzz!(|data: &[u8]| lenet_fuzz::idx(data));
}
