//! AFL's entry point for target `checkpoint`: see [`lenet_fuzz::checkpoint`].

fn main() {
    afl::fuzz!(|data: &[u8]| lenet_fuzz::checkpoint(data));
}
