//! Settings that are one of a few words (`model.backbone`, `trainer.precision`, ...) are
//! enums declared with [`choice_enum!`]: the words each variant accepts are written once,
//! and both the key table ([`super::keys::KEYS`]) and parsing read them from the enum.

use std::fmt;

/// A word that is not one of a setting's choices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ChoiceError {
    /// The setting, e.g. `model.fusion_mode`.
    pub key: &'static str,
    /// What was given.
    pub value: String,
    /// Every accepted word.
    pub choices: &'static [&'static str],
}

impl fmt::Display for ChoiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: unknown value `{}`", self.key, self.value)?;
        if let Some(n) = mvdrive_schemas::settings::nearest(
            &self.value.to_ascii_lowercase(),
            self.choices.iter().copied(),
        ) {
            write!(f, " (did you mean `{n}`?)")?;
        }
        write!(f, "; use one of {}", self.choices.join(", "))
    }
}

/// Declares a setting's enum: `Variant => "name" | "alias", ...`. The first word of a
/// variant is its canonical name ([`name`](#method.name), `Display`); parsing accepts every
/// word, case-insensitively; `NAMES` lists every word in declaration order.
#[macro_export]
macro_rules! choice_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident for $key:literal {
            $( $(#[$vmeta:meta])* $var:ident => $canon:literal $(| $alias:literal)* ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $var ),+
        }

        impl $name {
            /// The setting this enum is the value of.
            pub const KEY: &'static str = $key;
            /// Every accepted word, canonical names first within each variant.
            pub const NAMES: &'static [&'static str] = &[$( $canon $(, $alias)* ),+];
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$( $name::$var ),+];

            /// The canonical config word.
            pub fn name(self) -> &'static str {
                match self {
                    $( $name::$var => $canon ),+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::config::choice::ChoiceError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let v = s.trim().to_ascii_lowercase();
                $( if v == $canon $(|| v == $alias)* { return Ok($name::$var); } )+
                Err($crate::config::choice::ChoiceError {
                    key: $key,
                    value: s.to_string(),
                    choices: Self::NAMES,
                })
            }
        }
    };
}
