//! AFL's entry point for target `spec_toml`: see [`lenet_fuzz::spec_toml`].

fn main() {
    afl::fuzz!(|data: &[u8]| lenet_fuzz::spec_toml(data));
}
