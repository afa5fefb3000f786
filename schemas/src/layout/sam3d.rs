//! SAM-3D-Body's 70 keypoints (`sam3d70`) and the original Python project's 52-joint
//! subset of them (`sam3d52`).
//!
//! The joint names and their order are those of `mhr_names` in Meta's sam-3d-body
//! (`sam_3d_body/metadata/mhr70.py`: "the first 70 of 308 MHR keypoints"), with `-`
//! written `_` so that the `left_`/`right_` mirror rule applies. Each hand lists its five
//! fingers (thumb, index, middle, ring, pinky) with four joints each, from the tip
//! (`*_tip`) to the base (`*_third_joint`), then the wrist: right hand 21-41 (wrist 41),
//! left hand 42-62 (wrist 62). The skeleton is ours: the face as in COCO, nose-neck,
//! neck-shoulders, acromion-shoulder, shoulder-elbow-wrist (olecranon and cubital fossa
//! hang off the elbow), shoulder-hip, hip-knee-ankle, each foot point off its ankle, and
//! every finger as a chain wrist - third - second - first joint - tip.

use super::Layout;

/// SAM-3D-Body's 70 joint names, in its output order (`pred_keypoints_3d`, `pred_keypoints_2d`).
#[rustfmt::skip]
const SAM3D70_JOINTS: [&str; 70] = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_big_toe_tip", "left_small_toe_tip", "left_heel",
    "right_big_toe_tip", "right_small_toe_tip", "right_heel",
    "right_thumb_tip", "right_thumb_first_joint", "right_thumb_second_joint", "right_thumb_third_joint",
    "right_index_tip", "right_index_first_joint", "right_index_second_joint", "right_index_third_joint",
    "right_middle_tip", "right_middle_first_joint", "right_middle_second_joint", "right_middle_third_joint",
    "right_ring_tip", "right_ring_first_joint", "right_ring_second_joint", "right_ring_third_joint",
    "right_pinky_tip", "right_pinky_first_joint", "right_pinky_second_joint", "right_pinky_third_joint",
    "right_wrist",
    "left_thumb_tip", "left_thumb_first_joint", "left_thumb_second_joint", "left_thumb_third_joint",
    "left_index_tip", "left_index_first_joint", "left_index_second_joint", "left_index_third_joint",
    "left_middle_tip", "left_middle_first_joint", "left_middle_second_joint", "left_middle_third_joint",
    "left_ring_tip", "left_ring_first_joint", "left_ring_second_joint", "left_ring_third_joint",
    "left_pinky_tip", "left_pinky_first_joint", "left_pinky_second_joint", "left_pinky_third_joint",
    "left_wrist",
    "left_olecranon", "right_olecranon", "left_cubital_fossa", "right_cubital_fossa",
    "left_acromion", "right_acromion", "neck",
];

/// The 70-joint joints the original project keeps, in `sam3d52` order: 0-4 the head,
/// 5-6 the shoulders, 21-62 both hands (with their wrists), 67-69 the acromions and the
/// neck. `SAM3D52_FROM_70[i]` is the `sam3d70` index of `sam3d52` joint `i`.
#[rustfmt::skip]
pub const SAM3D52_FROM_70: [u8; 52] = [
    0, 1, 2, 3, 4, 5, 6,
    21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41,
    42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62,
    67, 68, 69,
];

const fn pick(idx: &[u8; 52]) -> [&'static str; 52] {
    let mut out = [""; 52];
    let mut i = 0;
    while i < 52 {
        out[i] = SAM3D70_JOINTS[idx[i] as usize];
        i += 1;
    }
    out
}

const SAM3D52_JOINTS: [&str; 52] = pick(&SAM3D52_FROM_70);

/// SAM-3D-Body (Meta's sam-3d-body, MHR 70 keypoints): body, feet, both hands, elbow
/// and shoulder landmarks, neck. See the module documentation for the source of the names.
#[rustfmt::skip]
pub const SAM3D70: Layout = Layout {
    name: "sam3d70",
    joints: &SAM3D70_JOINTS,
    edges: &[
        // face, nose-neck, neck-shoulders, acromions
        (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (0, 69), (69, 5), (69, 6), (67, 5), (68, 6),
        // arms: shoulder-elbow-wrist; olecranon and cubital fossa off the elbow
        (5, 7), (7, 62), (6, 8), (8, 41), (7, 63), (7, 65), (8, 64), (8, 66),
        // torso, legs, feet
        (5, 9), (6, 10), (9, 10), (9, 11), (11, 13), (10, 12), (12, 14),
        (13, 15), (13, 16), (13, 17), (14, 18), (14, 19), (14, 20),
        // right hand: wrist 41 - third - second - first joint - tip, per finger
        (41, 24), (24, 23), (23, 22), (22, 21), (41, 28), (28, 27), (27, 26), (26, 25),
        (41, 32), (32, 31), (31, 30), (30, 29), (41, 36), (36, 35), (35, 34), (34, 33),
        (41, 40), (40, 39), (39, 38), (38, 37),
        // left hand: wrist 62
        (62, 45), (45, 44), (44, 43), (43, 42), (62, 49), (49, 48), (48, 47), (47, 46),
        (62, 53), (53, 52), (52, 51), (51, 50), (62, 57), (57, 56), (56, 55), (55, 54),
        (62, 61), (61, 60), (60, 59), (59, 58),
    ],
};

/// The original project's 52 joints of SAM-3D-Body (head, shoulders, hands, acromions,
/// neck; [`SAM3D52_FROM_70`]). Its skeleton is `sam3d70`'s on the kept joints, with each
/// shoulder joined straight to its wrist since the elbows are left out.
#[rustfmt::skip]
pub const SAM3D52: Layout = Layout {
    name: "sam3d52",
    joints: &SAM3D52_JOINTS,
    edges: &[
        // face, nose-neck, neck-shoulders, acromions, shoulder-wrist
        (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (0, 51), (51, 5), (51, 6), (49, 5), (50, 6),
        (5, 48), (6, 27),
        // right hand: wrist 27
        (27, 10), (10, 9), (9, 8), (8, 7), (27, 14), (14, 13), (13, 12), (12, 11),
        (27, 18), (18, 17), (17, 16), (16, 15), (27, 22), (22, 21), (21, 20), (20, 19),
        (27, 26), (26, 25), (25, 24), (24, 23),
        // left hand: wrist 48
        (48, 31), (31, 30), (30, 29), (29, 28), (48, 35), (35, 34), (34, 33), (33, 32),
        (48, 39), (39, 38), (38, 37), (37, 36), (48, 43), (43, 42), (42, 41), (41, 40),
        (48, 47), (47, 46), (46, 45), (45, 44),
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_52_subset_is_the_70_layout_on_the_kept_joints() {
        assert_eq!(SAM3D70.joint("right_wrist"), Some(41));
        assert_eq!(SAM3D70.joint("left_wrist"), Some(62));
        assert_eq!(SAM3D70.joint("neck"), Some(69));
        assert_eq!(SAM3D70.joint("left_thumb_tip"), Some(42));
        let to52 = |j70: u8| SAM3D52_FROM_70.iter().position(|&k| k == j70);
        for (i, &j) in SAM3D52_FROM_70.iter().enumerate() {
            assert_eq!(SAM3D52.joints[i], SAM3D70.joints[j as usize]);
        }
        // Every 70-edge between kept joints is a 52-edge; the others are the two bridges.
        let mut kept: Vec<(usize, usize)> = SAM3D70
            .edges
            .iter()
            .filter_map(|&(a, b)| Some((to52(a)?, to52(b)?)))
            .collect();
        kept.extend([(5, 48), (6, 27)]);
        let mut e52: Vec<(usize, usize)> = SAM3D52
            .edges
            .iter()
            .map(|&(a, b)| (a as usize, b as usize))
            .collect();
        kept.sort();
        e52.sort();
        assert_eq!(kept, e52);
        assert_eq!(SAM3D52.joints[48], "left_wrist");
        assert_eq!(SAM3D52.joints[27], "right_wrist");
    }
}
