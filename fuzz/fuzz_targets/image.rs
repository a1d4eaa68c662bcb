//! AFL's entry point for target `image`: see [`lenet_fuzz::image`].

fn main() {
    afl::fuzz!(|data: &[u8]| lenet_fuzz::image(data));
}
