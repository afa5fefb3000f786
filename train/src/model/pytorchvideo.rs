//! pytorchvideo's X3D state-dict names, as mvdrive's: `model.pretrained` renames a file
//! whose tensors are named like pytorchvideo's `x3d_s` / `x3d_m` (what
//! `scripts/export_pytorchvideo.py` writes) on load. The table (docs/x3d-pytorchvideo.md)
//! was checked against pytorchvideo 0.1.5: the stem's two convolutions are named the other
//! way round there, SE blocks sit inside `norm_b`, and the head's `pre_conv` / `post_conv`
//! / `proj` are our `conv5` / `lin5` / `fc`.

/// Whether `names` are pytorchvideo X3D names (its stem's temporal-named convolution).
pub fn is_pytorchvideo_x3d<'a>(mut names: impl Iterator<Item = &'a String>) -> bool {
    names.any(|n| n == "blocks.0.conv.conv_t.weight")
}

/// mvdrive's name for pytorchvideo X3D tensor `name` (`None`: no counterpart, e.g.
/// `num_batches_tracked`).
pub fn from_pytorchvideo(name: &str) -> Option<String> {
    let p: Vec<&str> = name.split('.').collect();
    let renamed = match p.as_slice() {
        ["blocks", "0", "conv", "conv_t", "weight"] => "stem.conv_xy.weight".to_string(),
        ["blocks", "0", "conv", "conv_xy", "weight"] => "stem.conv_t.weight".to_string(),
        ["blocks", "0", "norm", x] => format!("stem.bn.{x}"),
        ["blocks", "5", "pool", "pre_conv", "weight"] => "head.conv5.weight".to_string(),
        ["blocks", "5", "pool", "pre_norm", x] => format!("head.bn5.{x}"),
        ["blocks", "5", "pool", "post_conv", "weight"] => "head.lin5.weight".to_string(),
        ["blocks", "5", "proj", x] => format!("fc.{x}"),
        ["blocks", s, "res_blocks", b, rest @ ..] if ["1", "2", "3", "4"].contains(s) => {
            let part = match rest {
                ["branch2", "conv_a", "weight"] => "conv_a.weight".to_string(),
                ["branch2", "norm_a", x] => format!("bn_a.{x}"),
                ["branch2", "conv_b", "weight"] => "conv_b.weight".to_string(),
                ["branch2", "norm_b", "0", x] => format!("bn_b.{x}"),
                ["branch2", "norm_b", "1", "block", "0", x] => format!("se.fc1.{x}"),
                ["branch2", "norm_b", "1", "block", "2", x] => format!("se.fc2.{x}"),
                ["branch2", "conv_c", "weight"] => "conv_c.weight".to_string(),
                ["branch2", "norm_c", x] => format!("bn_c.{x}"),
                ["branch1_conv", "weight"] => "branch1_conv.weight".to_string(),
                ["branch1_norm", x] => format!("branch1_bn.{x}"),
                _ => return None,
            };
            format!("stage{s}.{b}.{part}")
        }
        _ => return None,
    };
    (!renamed.ends_with("num_batches_tracked")).then_some(renamed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_table_maps_onto_our_names() {
        for (pv, ours) in [
            ("blocks.0.conv.conv_t.weight", "stem.conv_xy.weight"),
            ("blocks.0.conv.conv_xy.weight", "stem.conv_t.weight"),
            ("blocks.0.norm.running_var", "stem.bn.running_var"),
            (
                "blocks.2.res_blocks.4.branch2.norm_b.1.block.2.bias",
                "stage2.4.se.fc2.bias",
            ),
            (
                "blocks.3.res_blocks.0.branch1_norm.weight",
                "stage3.0.branch1_bn.weight",
            ),
            (
                "blocks.1.res_blocks.0.branch1_conv.weight",
                "stage1.0.branch1_conv.weight",
            ),
            (
                "blocks.4.res_blocks.6.branch2.norm_c.bias",
                "stage4.6.bn_c.bias",
            ),
            ("blocks.5.pool.post_conv.weight", "head.lin5.weight"),
            ("blocks.5.proj.weight", "fc.weight"),
        ] {
            assert_eq!(from_pytorchvideo(pv).as_deref(), Some(ours), "{pv}");
        }
        assert_eq!(from_pytorchvideo("blocks.0.norm.num_batches_tracked"), None);
        assert_eq!(from_pytorchvideo("blocks.6.proj.weight"), None);
    }
}
