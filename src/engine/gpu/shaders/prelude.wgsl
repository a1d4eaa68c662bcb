// Prepended to every shader (src/engine/gpu/kernels.rs): every entry point runs in
// workgroups of 64, and a dispatch is 2-D when 65,535 groups are not enough; flat()
// is the invocation's index in the whole dispatch.
fn flat(id: vec3<u32>, groups: vec3<u32>) -> u32 {
    return id.y * groups.x * 64u + id.x;
}
// Tested on the bits, which no compiler may assume away (WGSL lets it assume that
// floats are never infinite or NaN).
fn is_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}
fn is_nan(x: f32) -> bool {
    return !is_finite(x) && (bitcast<u32>(x) & 0x007fffffu) != 0u;
}
