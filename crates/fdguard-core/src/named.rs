//! Declares a `u8` enum whose variants have names: stored as one byte in fdguard's fd table,
//! turned into the report's words only when a report is written.

macro_rules! named_u8_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($variant:ident => $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum $name { $($variant,)* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }

            pub fn from_u8(v: u8) -> Option<$name> {
                Self::ALL.get(v as usize).copied()
            }

            pub fn from_name(name: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|v| v.name() == name)
            }
        }
    };
}

pub(crate) use named_u8_enum;
