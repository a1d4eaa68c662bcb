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

// A long sum shared by the 64 invocations of a workgroup, one workgroup per value
// written: invocation l sums terms l, l + 64, l + 128, … in order, then the 64 partial
// sums are added pairwise in a fixed tree. The same order on every run: no atomics.
// Every invocation of the group must call it (it holds barriers); group_sum returns
// the total to all of them.
var<workgroup> group_partial: array<f32, 64>;
fn group_sum(l: u32, s: f32) -> f32 {
    group_partial[l] = s;
    workgroupBarrier();
    for (var stride = 32u; stride > 0u; stride >>= 1u) {
        if (l < stride) { group_partial[l] += group_partial[l + stride]; }
        workgroupBarrier();
    }
    let total = group_partial[0];
    workgroupBarrier();
    return total;
}
// The largest of the 64 invocations' values, in the same fixed tree (max is exact in
// any order; the tree keeps it to barriers every invocation reaches).
fn group_max(l: u32, v: f32) -> f32 {
    group_partial[l] = v;
    workgroupBarrier();
    for (var stride = 32u; stride > 0u; stride >>= 1u) {
        if (l < stride) { group_partial[l] = max(group_partial[l], group_partial[l + stride]); }
        workgroupBarrier();
    }
    let top = group_partial[0];
    workgroupBarrier();
    return top;
}
// The value a workgroup writes, in a dispatch of one workgroup per value.
fn group_index(wg: vec3<u32>, groups: vec3<u32>) -> u32 {
    return wg.y * groups.x + wg.x;
}
