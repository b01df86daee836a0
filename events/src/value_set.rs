//! How a coded field of the contract is declared: one macro turns a FHIR or
//! HL7 v3 value set into a Rust enum whose wire form is the code, so the enum,
//! its JSON Schema and the README's list are read from one table.
//!
//! A *required* set (FHIR binding strength `required`) refuses any other
//! code, naming the set and its codes. An *extensible* set keeps a code it
//! does not list verbatim, as `Other`, so a hospital system that sends a
//! newer or local code loses nothing; the host counts such codes
//! ([`crate::Payload::unknown_codes`]).

/// What every coded field's type tells about its value set.
pub trait ValueSet {
    /// The value set's name and where it comes from, e.g.
    /// `v3 ActEncounterCode (http://terminology.hl7.org/ValueSet/v3-ActEncounterCode)`.
    const SOURCE: &'static str;
    /// Whether a code outside [`ValueSet::CODES`] is kept (extensible) or
    /// refused (required).
    const EXTENSIBLE: bool;
    /// Every code the set lists, as sent on the wire.
    const CODES: &'static [&'static str];
    /// The pattern (JSON Schema, ECMA 262) another code of an extensible set
    /// must match: any text but blanks, unless the set says more.
    const OTHER_PATTERN: &'static str = r"\S";

    /// The code as sent.
    fn code(&self) -> &str;

    /// Whether the code is one the set lists.
    fn is_known(&self) -> bool {
        Self::CODES.contains(&self.code())
    }
}

/// A value set as data: what a coded field allows, for tests, docs and
/// generated clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueSetInfo {
    /// See [`ValueSet::SOURCE`].
    pub source: &'static str,
    /// See [`ValueSet::EXTENSIBLE`].
    pub extensible: bool,
    /// See [`ValueSet::CODES`].
    pub codes: &'static [&'static str],
}

/// The [`ValueSetInfo`] of `V`.
pub const fn info<V: ValueSet>() -> ValueSetInfo {
    ValueSetInfo {
        source: V::SOURCE,
        extensible: V::EXTENSIBLE,
        codes: V::CODES,
    }
}

/// Declares a value set: `required` or `extensible`, its source, and one line
/// per code (`Variant = "code"`, with the code's meaning as its doc comment).
macro_rules! value_set {
    (
        $(#[$meta:meta])*
        $strength:ident $name:ident = $source:literal $(where other: $check:path, $pattern:literal)? {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal, )+
        }
    ) => {
        value_set!(@enum $strength, $(#[$meta])* $name { $( $(#[$vmeta])* $variant, )+ });

        impl $crate::value_set::ValueSet for $name {
            const SOURCE: &'static str = $source;
            const EXTENSIBLE: bool = value_set!(@extensible $strength);
            const CODES: &'static [&'static str] = &[$($code),+];
            $(const OTHER_PATTERN: &'static str = $pattern;)?

            fn code(&self) -> &str {
                value_set!(@code $strength, self, $($variant = $code),+)
            }
        }

        impl $name {
            /// Reads a code: a listed one becomes its variant.
            fn from_code(code: &str) -> Option<Self> {
                match code {
                    $($code => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str($crate::value_set::ValueSet::code(self))
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            /// Reads a code as the wire does: a listed one, or (extensible
            /// sets) another that passes the set's check.
            fn from_str(code: &str) -> Result<Self, String> {
                if let Some(known) = $name::from_code(code) {
                    return Ok(known);
                }
                value_set!(@other $strength, $name, code $(, $check)?)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let code = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                code.parse().map_err(serde::de::Error::custom)
            }
        }

        #[cfg(feature = "schema")]
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                $crate::value_set::schema::<Self>()
            }
        }
    };

    (@enum required, $(#[$meta:meta])* $name:ident { $( $(#[$vmeta:meta])* $variant:ident, )+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }
    };
    (@enum extensible, $(#[$meta:meta])* $name:ident { $( $(#[$vmeta:meta])* $variant:ident, )+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A code the value set does not list, kept as sent.
            Other(String),
        }
    };

    (@extensible required) => { false };
    (@extensible extensible) => { true };

    (@code required, $self:ident, $($variant:ident = $code:literal),+) => {
        match $self { $(Self::$variant => $code,)+ }
    };
    (@code extensible, $self:ident, $($variant:ident = $code:literal),+) => {
        match $self { $(Self::$variant => $code,)+ Self::Other(code) => code.as_str() }
    };

    (@check $code:ident) => { Ok(()) };
    (@check $code:ident, $check:path) => { $check(&$code) };

    (@other required, $name:ident, $code:ident) => {
        Err($crate::value_set::not_in_set::<$name>(&$code))
    };
    (@other extensible, $name:ident, $code:ident $(, $check:path)?) => {
        if $code.trim().is_empty() {
            Err(format!(
                "a code of {} must not be empty",
                <$name as $crate::value_set::ValueSet>::SOURCE
            ))
        } else {
            let checked: Result<(), String> = value_set!(@check $code $(, $check)?);
            checked.map(|()| $name::Other($code.to_owned()))
        }
    };
}

/// The reason a code outside a required set is refused: the code, the set and
/// what it allows.
pub fn not_in_set<V: ValueSet>(code: &str) -> String {
    let allowed: Vec<String> = V::CODES.iter().map(|c| format!("`{c}`")).collect();
    format!(
        "`{code}` is not a code of {}; expected one of {}",
        V::SOURCE,
        allowed.join(", ")
    )
}

/// The JSON Schema of a value set: the listed codes, and for an extensible
/// set any other non-empty string beside them.
#[cfg(feature = "schema")]
pub fn schema<V: ValueSet>() -> schemars::Schema {
    let strength = if V::EXTENSIBLE {
        "extensible: another code is kept and counted"
    } else {
        "required: another code is refused"
    };
    let description = format!("A code of {} ({strength}).", V::SOURCE);
    if V::EXTENSIBLE {
        schemars::json_schema!({
            "description": description,
            "type": "string",
            "anyOf": [{ "enum": V::CODES }, { "type": "string", "pattern": V::OTHER_PATTERN }],
        })
    } else {
        schemars::json_schema!({
            "description": description,
            "type": "string",
            "enum": V::CODES,
        })
    }
}

pub(crate) use value_set;
