//! Claimed values read straight from a request's JSON (a verification's
//! body, a batch line): names and values are kept as text, borrowed from
//! the body wherever they have no escapes, so that no JSON tree, owned
//! string or map node is built for a claim.

use serde_json::Value as Json;
use std::borrow::Cow;

/// A request's claims: (field name, value) in name order, the last of a
/// repeated name kept — what a parsed JSON object holds, so that answers
/// and audit entries list fields whichever way the claims were read.
pub struct Claimed<'a>(Vec<(Cow<'a, str>, Text<'a>)>);

impl<'a> Claimed<'a> {
    /// The members of a JSON object read as claims.
    fn read<'de: 'a, A: serde::de::MapAccess<'de>>(mut a: A) -> Result<Claimed<'a>, A::Error> {
        let mut claims: Vec<(Cow<'a, str>, Text<'a>)> = Vec::with_capacity(a.size_hint().unwrap_or(4));
        while let Some(Str(name)) = a.next_key::<Str<'a>>()? {
            claims.push((name, a.next_value::<Text<'a>>()?));
        }
        // Reversed, then sorted stably: the first of each run of one name
        // is the last given, the one an object keeps.
        claims.reverse();
        claims.sort_by(|x, y| x.0.cmp(&y.0));
        claims.dedup_by(|later, kept| later.0 == kept.0);
        Ok(Claimed(claims))
    }

    /// Each claim's name and the text of its value
    /// ([`crate::compare::json_text`]'s), in name order.
    pub fn texts(&self) -> impl ExactSizeIterator<Item = (&str, Option<Cow<'_, str>>)> {
        self.0.iter().map(|(name, claim)| (&**name, claim.claim_text()))
    }
}

/// The body of a single verification, `{"dataset": …, "fields": {…}}`,
/// read in place. `fields` must be an object; anything else is a type
/// error, as it is for a JSON object member.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody<'a> {
    #[serde(borrow, default)]
    dataset: Option<Str<'a>>,
    #[serde(borrow)]
    fields: ObjectIn<'a>,
}

impl<'a> VerifyBody<'a> {
    /// The dataset named (`None`: the subject's primary dataset).
    pub fn dataset(&self) -> Option<&str> {
        self.dataset.as_ref().map(|d| &*d.0)
    }

    pub fn claims(&self) -> &Claimed<'a> {
        &self.fields.0
    }
}

/// Claims that must come as a JSON object. Asked for as a map, so that
/// anything else is refused where it starts, with the error (kind and
/// position) a JSON object member gives, without reading it.
struct ObjectIn<'a>(Claimed<'a>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for ObjectIn<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = ObjectIn<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of claimed values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, a: A) -> Result<ObjectIn<'a>, A::Error> {
                Claimed::read(a).map(ObjectIn)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A member's value, which should be a string (a claimed value may also
/// be a number or a boolean).
#[derive(Default)]
pub(crate) enum Text<'a> {
    /// Absent or `null`.
    #[default]
    Missing,
    Str(Cow<'a, str>),
    Number(serde_json::Number),
    Bool(bool),
    /// An array or an object (skipped without being kept).
    Other,
}

impl<'a> Text<'a> {
    /// A claimed value's text, as [`crate::compare::json_text`] gives it.
    pub(crate) fn claim_text(&self) -> Option<Cow<'_, str>> {
        match self {
            Text::Str(s) => Some(Cow::Borrowed(s)),
            Text::Number(n) => Some(Cow::Owned(n.to_string())),
            Text::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
            Text::Missing | Text::Other => None,
        }
    }
}

struct TextVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> serde::de::Visitor<'de> for TextVisitor<'a> {
    type Value = Text<'a>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'a>, E> {
        Ok(Text::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Text<'a>, E> {
        Ok(Text::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Text<'a>, E> {
        Ok(Text::Str(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<Text<'a>, E> {
        Ok(Text::Missing)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Text<'a>, E> {
        Ok(Text::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Text<'a>, E> {
        Ok(Text::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Text<'a>, E> {
        Ok(Text::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Text<'a>, E> {
        // The parser gives finite numbers only.
        Ok(serde_json::Number::from_f64(v).map_or(Text::Other, Text::Number))
    }
    // Arrays and objects are read as JSON values (and dropped), so that
    // what a JSON value refuses (out-of-range numbers, over-deep nesting)
    // makes the line invalid here too.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, a: A) -> Result<Text<'a>, A::Error> {
        <Json as serde::Deserialize>::deserialize(serde::de::value::SeqAccessDeserializer::new(a)).map(|_| Text::Other)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, a: A) -> Result<Text<'a>, A::Error> {
        <Json as serde::Deserialize>::deserialize(serde::de::value::MapAccessDeserializer::new(a)).map(|_| Text::Other)
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor(std::marker::PhantomData))
    }
}

/// A string (a member name, a dataset), borrowed from the body where it
/// has no escapes. (serde borrows a bare `Cow<str>` member only when told
/// to, and never one inside an `Option`.)
pub struct Str<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Str<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_str(TextVisitor(std::marker::PhantomData))? {
            Text::Str(s) => Ok(Str(s)),
            _ => Err(serde::de::Error::custom("expected a string")),
        }
    }
}

/// `fields` as parsed: the claims as (name, value) in name order with the
/// last of repeated names kept, as a parsed JSON object has them, so that
/// answers and audit entries list fields as the single verification does.
pub(crate) enum FieldsIn<'a> {
    Object(Claimed<'a>),
    /// Not an object.
    Other,
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for FieldsIn<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = FieldsIn<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, a: A) -> Result<FieldsIn<'a>, A::Error> {
                Claimed::read(a).map(FieldsIn::Object)
            }
            fn visit_bool<E>(self, _: bool) -> Result<FieldsIn<'a>, E> {
                Ok(FieldsIn::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<FieldsIn<'a>, E> {
                Ok(FieldsIn::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<FieldsIn<'a>, E> {
                Ok(FieldsIn::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<FieldsIn<'a>, E> {
                Ok(FieldsIn::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<FieldsIn<'a>, E> {
                Ok(FieldsIn::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, a: A) -> Result<FieldsIn<'a>, A::Error> {
                <Json as serde::Deserialize>::deserialize(serde::de::value::SeqAccessDeserializer::new(a)).map(|_| FieldsIn::Other)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::json_text;
    use serde_json::Map;

    /// The body as it was read before: a JSON object of claims.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct AsObject {
        dataset: Option<String>,
        fields: Map<String, Json>,
    }

    fn texts(c: &Claimed<'_>) -> Vec<(String, Option<String>)> {
        c.texts().map(|(n, t)| (n.to_owned(), t.map(Cow::into_owned))).collect()
    }

    /// Every body is read in place as it is read into a JSON object: the
    /// same claims in the same order, or a refusal of the same kind (which
    /// decides the error's wording).
    #[test]
    fn a_body_read_in_place_reads_as_a_json_object() {
        let deep = format!("{{\"dataset\":\"hukou\",\"fields\":{{\"name\":{}1{}}}}}", "[".repeat(200), "]".repeat(200));
        let deep_fields = format!("{{\"fields\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        let bodies = [
            r#"{"dataset":"hukou","fields":{"name":"张三","birth_date":"1980-05-04"}}"#,
            r#"{"fields":{"b":1,"a":true,"c":null,"d":[1],"e":{"x":1},"f":-2.5e3}}"#,
            r#"{"fields":{"name":"x","name":"y","a\u0062":"\u00e9"}}"#,
            r#"{"dataset":null,"fields":{}}"#,
            r#"{"fields":{"n":18446744073709551615,"m":-9223372036854775808,"k":1e300}}"#,
            r#"{"dataset":"hukou","fields":"name"}"#,
            r#"{"dataset":"hukou","fields":[["name","x"]]}"#,
            r#"{"fields":[1e400]}"#,
            r#"{"fields":[1,]}"#,
            r#"{"fields":["#,
            r#"{"fields":true,"dataset":"hukou"}"#,
            r#"{"dataset":"hukou","fields":null}"#,
            r#"{"dataset":5,"fields":{"name":"x"}}"#,
            r#"{"dataset":"hukou"}"#,
            r#"{"dataset":"hukou","dataset":"death","fields":{"name":"x"}}"#,
            r#"{"dataset":"hukou","fields":{"name":"x"},"extra":1}"#,
            r#"{"fields":{"n":1e400}}"#,
            r#"{"fields":{"name":"x"}"#,
            r#"[]"#,
            &deep,
            &deep_fields,
        ];
        for body in bodies {
            reads_alike(body);
        }
    }

    /// `body` read in place reads as it reads into a JSON object.
    fn reads_alike(body: &str) {
        let old = serde_json::from_str::<AsObject>(body);
        let new = serde_json::from_str::<VerifyBody<'_>>(body);
        match (old, new) {
            (Ok(o), Ok(n)) => {
                assert_eq!(o.dataset.as_deref(), n.dataset(), "{body}");
                let object: Vec<(String, Option<String>)> =
                    o.fields.iter().map(|(name, v)| (name.clone(), json_text(v).map(Cow::into_owned))).collect();
                assert_eq!(object, texts(n.claims()), "{body}");
            }
            (Err(o), Err(n)) => assert_eq!((o.classify(), o.line(), o.column()), (n.classify(), n.line(), n.column()), "{body}: {o} / {n}"),
            (o, n) => panic!("{body}: read as an object {:?}, in place {:?}", o.err(), n.err()),
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]
        /// Bodies of any members (`dataset`, `fields`, unknown ones,
        /// repeated ones, escaped names) with values of every JSON type,
        /// claims included, in any order.
        #[test]
        fn any_body_read_in_place_reads_as_a_json_object(
            members in proptest::collection::vec((0usize..5, 0usize..12, proptest::collection::vec((0usize..6, 0usize..12), 0..5)), 0..4),
        ) {
            const MEMBERS: [&str; 5] = ["dataset", "fields", "fields", "d\\u0061taset", "other"];
            const NAMES: [&str; 6] = ["name", "birth_date", "nickname", "n\\u0061me", "", "\\\"q"];
            const VALUES: [&str; 12] = [
                "\"张三\"", "\"hukou\"", "\"\\u5f20\"", "19491231", "-1.5e3", "true", "null", "[1,\"x\"]", "{\"a\":1}",
                "\"x\\n\"", "18446744073709551616", "{}",
            ];
            let body: Vec<String> = members
                .iter()
                .map(|(m, v, claims)| {
                    // `fields` given once as an object of claims, once as
                    // any value (arrays and objects included).
                    let value = if *m == 1 {
                        let c: Vec<String> = claims.iter().map(|&(n, x)| format!("\"{}\":{}", NAMES[n], VALUES[x])).collect();
                        format!("{{{}}}", c.join(","))
                    } else {
                        VALUES[*v].to_owned()
                    };
                    format!("\"{}\": {}", MEMBERS[*m], value)
                })
                .collect();
            reads_alike(&format!("{{{}}}", body.join(" , ")));
        }
    }

    /// Text without escapes is borrowed from the body, not copied.
    #[test]
    fn unescaped_text_is_borrowed() {
        let body = r#"{"dataset":"hukou","fields":{"name":"张三","gender":"1"}}"#;
        let b: VerifyBody<'_> = serde_json::from_str(body).unwrap();
        assert!(matches!(b.dataset, Some(Str(Cow::Borrowed("hukou")))));
        assert!(b.claims().0.iter().all(|(n, t)| matches!(n, Cow::Borrowed(_)) && matches!(t, Text::Str(Cow::Borrowed(_)))));
    }
}
