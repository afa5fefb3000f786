//! Joint layouts of keypoint files: joint names and skeleton edges, for graph models.
//!
//! A cache records each view's layout name (`views.keypoint_layout`); readers look the
//! joints and edges up here.

mod sam3d;

pub use sam3d::{SAM3D52, SAM3D52_FROM_70, SAM3D70};

/// A keypoint layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Name used in manifests and caches.
    pub name: &'static str,
    /// Joint names, in storage order.
    pub joints: &'static [&'static str],
    /// Undirected skeleton edges between joint indices.
    pub edges: &'static [(u8, u8)],
}

impl Layout {
    /// Number of joints.
    pub fn len(&self) -> usize {
        self.joints.len()
    }

    /// True for a layout without joints (none exist).
    pub fn is_empty(&self) -> bool {
        self.joints.is_empty()
    }

    /// Index of a joint by name.
    pub fn joint(&self, name: &str) -> Option<usize> {
        self.joints
            .iter()
            .position(|j| j.eq_ignore_ascii_case(name))
    }

    /// The joint each joint becomes in a mirror image: `left_*` and `right_*` swap, the
    /// others stay (`mirror[j]` for joint `j`).
    pub fn mirror(&self) -> Vec<usize> {
        (0..self.len())
            .map(|j| {
                let name = self.joints[j];
                let other = if let Some(rest) = name.strip_prefix("left_") {
                    format!("right_{rest}")
                } else if let Some(rest) = name.strip_prefix("right_") {
                    format!("left_{rest}")
                } else {
                    return j;
                };
                self.joint(&other).unwrap_or(j)
            })
            .collect()
    }
}

/// COCO-17 (MS COCO keypoints; also MMPose/Detectron2 output).
pub const COCO17: Layout = Layout {
    name: "coco17",
    joints: &[
        "nose",
        "left_eye",
        "right_eye",
        "left_ear",
        "right_ear",
        "left_shoulder",
        "right_shoulder",
        "left_elbow",
        "right_elbow",
        "left_wrist",
        "right_wrist",
        "left_hip",
        "right_hip",
        "left_knee",
        "right_knee",
        "left_ankle",
        "right_ankle",
    ],
    edges: &[
        (15, 13),
        (13, 11),
        (16, 14),
        (14, 12),
        (11, 12),
        (5, 11),
        (6, 12),
        (5, 6),
        (5, 7),
        (6, 8),
        (7, 9),
        (8, 10),
        (1, 2),
        (0, 1),
        (0, 2),
        (1, 3),
        (2, 4),
        (3, 5),
        (4, 6),
    ],
};

/// OpenPose COCO-18 (`--model_pose COCO`).
pub const OPENPOSE18: Layout = Layout {
    name: "openpose18",
    joints: &[
        "nose",
        "neck",
        "right_shoulder",
        "right_elbow",
        "right_wrist",
        "left_shoulder",
        "left_elbow",
        "left_wrist",
        "right_hip",
        "right_knee",
        "right_ankle",
        "left_hip",
        "left_knee",
        "left_ankle",
        "right_eye",
        "left_eye",
        "right_ear",
        "left_ear",
    ],
    edges: &[
        (1, 2),
        (1, 5),
        (2, 3),
        (3, 4),
        (5, 6),
        (6, 7),
        (1, 8),
        (8, 9),
        (9, 10),
        (1, 11),
        (11, 12),
        (12, 13),
        (1, 0),
        (0, 14),
        (14, 16),
        (0, 15),
        (15, 17),
    ],
};

/// OpenPose BODY_25 (the default OpenPose model).
pub const OPENPOSE25: Layout = Layout {
    name: "openpose25",
    joints: &[
        "nose",
        "neck",
        "right_shoulder",
        "right_elbow",
        "right_wrist",
        "left_shoulder",
        "left_elbow",
        "left_wrist",
        "mid_hip",
        "right_hip",
        "right_knee",
        "right_ankle",
        "left_hip",
        "left_knee",
        "left_ankle",
        "right_eye",
        "left_eye",
        "right_ear",
        "left_ear",
        "left_big_toe",
        "left_small_toe",
        "left_heel",
        "right_big_toe",
        "right_small_toe",
        "right_heel",
    ],
    edges: &[
        (1, 8),
        (1, 2),
        (1, 5),
        (2, 3),
        (3, 4),
        (5, 6),
        (6, 7),
        (8, 9),
        (9, 10),
        (10, 11),
        (8, 12),
        (12, 13),
        (13, 14),
        (1, 0),
        (0, 15),
        (15, 17),
        (0, 16),
        (16, 18),
        (14, 19),
        (19, 20),
        (14, 21),
        (11, 22),
        (22, 23),
        (11, 24),
    ],
};

/// MediaPipe Pose (33 landmarks).
pub const MEDIAPIPE33: Layout = Layout {
    name: "mediapipe33",
    joints: &[
        "nose",
        "left_eye_inner",
        "left_eye",
        "left_eye_outer",
        "right_eye_inner",
        "right_eye",
        "right_eye_outer",
        "left_ear",
        "right_ear",
        "mouth_left",
        "mouth_right",
        "left_shoulder",
        "right_shoulder",
        "left_elbow",
        "right_elbow",
        "left_wrist",
        "right_wrist",
        "left_pinky",
        "right_pinky",
        "left_index",
        "right_index",
        "left_thumb",
        "right_thumb",
        "left_hip",
        "right_hip",
        "left_knee",
        "right_knee",
        "left_ankle",
        "right_ankle",
        "left_heel",
        "right_heel",
        "left_foot_index",
        "right_foot_index",
    ],
    edges: &[
        (0, 1),
        (1, 2),
        (2, 3),
        (3, 7),
        (0, 4),
        (4, 5),
        (5, 6),
        (6, 8),
        (9, 10),
        (11, 12),
        (11, 13),
        (13, 15),
        (15, 17),
        (15, 19),
        (15, 21),
        (17, 19),
        (12, 14),
        (14, 16),
        (16, 18),
        (16, 20),
        (16, 22),
        (18, 20),
        (11, 23),
        (12, 24),
        (23, 24),
        (23, 25),
        (24, 26),
        (25, 27),
        (26, 28),
        (27, 29),
        (28, 30),
        (29, 31),
        (30, 32),
        (27, 31),
        (28, 32),
    ],
};

/// Drive&Act `openpose_3d` (26 joints of (x, y, z, conf) per frame). The dataset's joint
/// names were not available to us: joints 0-24 are assumed to follow OpenPose BODY_25
/// (whose triangulation the files come from) and joint 25 is kept unnamed, without edges.
pub const DRIVEACT26: Layout = Layout {
    name: "driveact26",
    joints: &[
        "nose",
        "neck",
        "right_shoulder",
        "right_elbow",
        "right_wrist",
        "left_shoulder",
        "left_elbow",
        "left_wrist",
        "mid_hip",
        "right_hip",
        "right_knee",
        "right_ankle",
        "left_hip",
        "left_knee",
        "left_ankle",
        "right_eye",
        "left_eye",
        "right_ear",
        "left_ear",
        "left_big_toe",
        "left_small_toe",
        "left_heel",
        "right_big_toe",
        "right_small_toe",
        "right_heel",
        "joint_25",
    ],
    edges: OPENPOSE25.edges,
};

/// Every layout.
pub const LAYOUTS: [Layout; 7] = [
    COCO17,
    OPENPOSE18,
    OPENPOSE25,
    MEDIAPIPE33,
    DRIVEACT26,
    SAM3D70,
    SAM3D52,
];

/// Look a layout up by name.
pub fn layout(name: &str) -> Option<Layout> {
    LAYOUTS.iter().copied().find(|l| l.name == name)
}

/// Names of every layout, for error messages.
pub fn layout_names() -> String {
    LAYOUTS
        .iter()
        .map(|l| l.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_left_joint_has_a_right_partner_and_the_mirror_is_an_involution() {
        for l in LAYOUTS {
            let m = l.mirror();
            for (j, &k) in m.iter().enumerate() {
                assert_eq!(m[k], j, "{}: {}", l.name, l.joints[j]);
                let side = |n: &str| n.starts_with("left_") || n.starts_with("right_");
                assert_eq!(
                    k != j,
                    side(l.joints[j]),
                    "{}: {} has no partner",
                    l.name,
                    l.joints[j]
                );
            }
        }
        assert_eq!(
            COCO17.mirror()[COCO17.joint("left_wrist").unwrap()],
            COCO17.joint("right_wrist").unwrap()
        );
    }

    #[test]
    fn layouts_have_the_documented_sizes_and_valid_edges() {
        let sizes: Vec<(&str, usize)> = LAYOUTS.iter().map(|l| (l.name, l.len())).collect();
        assert_eq!(
            sizes,
            vec![
                ("coco17", 17),
                ("openpose18", 18),
                ("openpose25", 25),
                ("mediapipe33", 33),
                ("driveact26", 26),
                ("sam3d70", 70),
                ("sam3d52", 52)
            ]
        );
        for l in LAYOUTS {
            for &(a, b) in l.edges {
                assert!(
                    (a as usize) < l.len() && (b as usize) < l.len() && a != b,
                    "{}: edge {a}-{b}",
                    l.name
                );
            }
            // Connected skeleton (MediaPipe's mouth pair and driveact26's unnamed extra
            // joint stand apart by design).
            if l.name == "mediapipe33" {
                continue;
            }
            let n = if l.name == "driveact26" { 25 } else { l.len() };
            let mut seen = vec![false; n];
            let mut stack = vec![0usize];
            while let Some(j) = stack.pop() {
                if std::mem::replace(&mut seen[j], true) {
                    continue;
                }
                for &(a, b) in l.edges {
                    let (a, b) = (a as usize, b as usize);
                    if a == j && b < n {
                        stack.push(b);
                    }
                    if b == j && a < n {
                        stack.push(a);
                    }
                }
            }
            assert!(
                seen.iter().all(|s| *s),
                "{}: skeleton not connected",
                l.name
            );
        }
    }
}
