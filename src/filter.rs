//! Attribute filters of a recommendation request: equality, membership, numeric ranges and
//! their boolean combinations, checked against an item's attributes.

use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::service::ServiceError;

/// Deepest nesting of `and`, `or` and `not` accepted.
const MAX_DEPTH: usize = 8;
/// Maximum number of conditions in one filter, counting every nested one.
const MAX_CONDITIONS: usize = 64;

/// A filter as a client sends it: one condition on a `field`, or `and`, `or`, `not` of
/// other filters.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"and": [{"field": "brand", "in": ["Nike", "Adidas"]}, {"field": "price", "gte": 20, "lt": 100}]}))]
pub struct FilterSpec {
    /// Every filter must match.
    #[schema(no_recursion)]
    pub and: Option<Vec<FilterSpec>>,
    /// At least one filter must match.
    #[schema(no_recursion)]
    pub or: Option<Vec<FilterSpec>>,
    /// The filter must not match.
    #[schema(no_recursion)]
    pub not: Option<Box<FilterSpec>>,
    /// The attribute a condition tests.
    pub field: Option<String>,
    /// The attribute equals this value (or, for a list attribute, contains it).
    #[schema(value_type = Object)]
    pub eq: Option<Value>,
    /// The attribute equals one of these values.
    #[serde(rename = "in")]
    #[schema(value_type = Vec<Object>)]
    pub any_of: Option<Vec<Value>>,
    /// The attribute is a number (or a numeric string) greater than this.
    pub gt: Option<f64>,
    /// ... greater than or equal to this.
    pub gte: Option<f64>,
    /// ... less than this.
    pub lt: Option<f64>,
    /// ... less than or equal to this.
    pub lte: Option<f64>,
}

/// A validated filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Equals { field: String, value: Value },
    OneOf { field: String, values: Vec<Value> },
    Range { field: String, low: Option<(f64, bool)>, high: Option<(f64, bool)> },
}

impl FilterSpec {
    /// Checks the filter and turns it into a `Filter`; errors name the part at fault, such as
    /// `filter.and[1].gte`.
    pub fn compile(&self, path: &str) -> Result<Filter, ServiceError> {
        let mut conditions = 0;
        self.compile_at(path, 0, &mut conditions)
    }

    fn compile_at(&self, path: &str, depth: usize, conditions: &mut usize) -> Result<Filter, ServiceError> {
        *conditions += 1;
        if depth > MAX_DEPTH || *conditions > MAX_CONDITIONS {
            return Err(ServiceError::invalid(path, format!("nests deeper than {MAX_DEPTH} or has more than {MAX_CONDITIONS} conditions")));
        }
        let has_condition = self.eq.is_some() || self.any_of.is_some() || self.gt.is_some() || self.gte.is_some() || self.lt.is_some() || self.lte.is_some();
        let kinds = [self.and.is_some(), self.or.is_some(), self.not.is_some(), self.field.is_some()].iter().filter(|set| **set).count();
        if kinds != 1 {
            return Err(ServiceError::invalid(path, "needs exactly one of `and`, `or`, `not` or `field` (with `eq`, `in`, or `gt`/`gte`/`lt`/`lte`)"));
        }
        let children = |specs: &[FilterSpec], name: &str, conditions: &mut usize| -> Result<Vec<Filter>, ServiceError> {
            if specs.is_empty() {
                return Err(ServiceError::invalid(format!("{path}.{name}"), "must list at least one filter"));
            }
            specs.iter().enumerate().map(|(position, spec)| spec.compile_at(&format!("{path}.{name}[{position}]"), depth + 1, conditions)).collect()
        };
        if let Some(specs) = &self.and {
            return if has_condition { Err(mixed(path)) } else { Ok(Filter::And(children(specs, "and", conditions)?)) };
        }
        if let Some(specs) = &self.or {
            return if has_condition { Err(mixed(path)) } else { Ok(Filter::Or(children(specs, "or", conditions)?)) };
        }
        if let Some(spec) = &self.not {
            return if has_condition { Err(mixed(path)) } else { Ok(Filter::Not(Box::new(spec.compile_at(&format!("{path}.not"), depth + 1, conditions)?))) };
        }

        let field = self.field.clone().unwrap_or_default();
        if field.is_empty() {
            return Err(ServiceError::invalid(format!("{path}.field"), "must name an attribute"));
        }
        let range = self.gt.is_some() || self.gte.is_some() || self.lt.is_some() || self.lte.is_some();
        match (&self.eq, &self.any_of, range) {
            (Some(value), None, false) => Ok(Filter::Equals { field, value: value.clone() }),
            (None, Some(values), false) if !values.is_empty() => Ok(Filter::OneOf { field, values: values.clone() }),
            (None, Some(_), false) => Err(ServiceError::invalid(format!("{path}.in"), "must list at least one value")),
            (None, None, true) => {
                if (self.gt.is_some() && self.gte.is_some()) || (self.lt.is_some() && self.lte.is_some()) {
                    return Err(ServiceError::invalid(path, "use one lower bound (`gt` or `gte`) and one upper bound (`lt` or `lte`)"));
                }
                let low = self.gt.map(|value| (value, false)).or(self.gte.map(|value| (value, true)));
                let high = self.lt.map(|value| (value, false)).or(self.lte.map(|value| (value, true)));
                Ok(Filter::Range { field, low, high })
            }
            (None, None, false) => Err(ServiceError::invalid(path, "a `field` needs a condition: `eq`, `in`, or `gt`/`gte`/`lt`/`lte`")),
            _ => Err(ServiceError::invalid(path, "combine `eq`, `in` and ranges with `and` instead of in one condition")),
        }
    }
}

fn mixed(path: &str) -> ServiceError {
    ServiceError::invalid(path, "`and`, `or` and `not` cannot carry `eq`, `in` or range conditions; nest them")
}

impl Filter {
    /// True when an item with these attributes passes the filter. A missing attribute fails
    /// every condition on it.
    pub fn matches(&self, attributes: &Map<String, Value>) -> bool {
        match self {
            Filter::And(filters) => filters.iter().all(|filter| filter.matches(attributes)),
            Filter::Or(filters) => filters.iter().any(|filter| filter.matches(attributes)),
            Filter::Not(filter) => !filter.matches(attributes),
            Filter::Equals { field, value } => values_of(attributes, field).any(|found| same(found, value)),
            Filter::OneOf { field, values } => values_of(attributes, field).any(|found| values.iter().any(|value| same(found, value))),
            Filter::Range { field, low, high } => values_of(attributes, field).filter_map(number).any(|number| {
                let above = low.is_none_or(|(bound, inclusive)| if inclusive { number >= bound } else { number > bound });
                let below = high.is_none_or(|(bound, inclusive)| if inclusive { number <= bound } else { number < bound });
                above && below
            }),
        }
    }
}

/// Returns the attribute's value, or each element of a list attribute.
fn values_of<'a>(attributes: &'a Map<String, Value>, field: &str) -> Box<dyn Iterator<Item = &'a Value> + 'a> {
    match attributes.get(field) {
        Some(Value::Array(values)) => Box::new(values.iter()),
        Some(value) => Box::new(std::iter::once(value)),
        None => Box::new(std::iter::empty()),
    }
}

/// Reads a number, or a string that contains one (catalogue files give every column as text).
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// Equality where 19.5 and "19.5" are the same and strings compare exactly.
fn same(found: &Value, expected: &Value) -> bool {
    match (number(found), number(expected)) {
        (Some(a), Some(b)) if matches!(expected, Value::Number(_)) || matches!(found, Value::Number(_)) => a == b,
        _ => found == expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(spec: Value) -> Result<Filter, ServiceError> {
        serde_json::from_value::<FilterSpec>(spec).unwrap().compile("filter")
    }

    fn item(attributes: Value) -> Map<String, Value> {
        attributes.as_object().unwrap().clone()
    }

    #[test]
    fn equality_membership_and_ranges() {
        let shoe = item(json!({"brand": "Nike", "price": "89", "tags": ["running", "men"], "in_stock": true}));
        assert!(compile(json!({"field": "brand", "eq": "Nike"})).unwrap().matches(&shoe));
        assert!(compile(json!({"field": "brand", "in": ["Adidas", "Nike"]})).unwrap().matches(&shoe));
        assert!(compile(json!({"field": "price", "gte": 50, "lt": 90})).unwrap().matches(&shoe));
        assert!(!compile(json!({"field": "price", "gt": 89})).unwrap().matches(&shoe));
        assert!(compile(json!({"field": "price", "eq": 89})).unwrap().matches(&shoe));
        assert!(compile(json!({"field": "tags", "eq": "running"})).unwrap().matches(&shoe));
        assert!(compile(json!({"field": "in_stock", "eq": true})).unwrap().matches(&shoe));
        assert!(!compile(json!({"field": "colour", "eq": "red"})).unwrap().matches(&shoe));
    }

    #[test]
    fn boolean_combinations() {
        let shoe = item(json!({"brand": "Nike", "price": 89}));
        let filter = compile(json!({"and": [{"field": "brand", "eq": "Nike"}, {"not": {"field": "price", "gt": 100}}]})).unwrap();
        assert!(filter.matches(&shoe));
        let filter = compile(json!({"or": [{"field": "brand", "eq": "Puma"}, {"field": "price", "lte": 50}]})).unwrap();
        assert!(!filter.matches(&shoe));
    }

    #[test]
    fn malformed_filters_name_their_part() {
        let field_of = |spec: Value| match compile(spec).unwrap_err() {
            ServiceError::InvalidInput { field, .. } => field,
            other => panic!("{other}"),
        };
        assert_eq!(field_of(json!({})), "filter");
        assert_eq!(field_of(json!({"field": "price"})), "filter");
        assert_eq!(field_of(json!({"and": []})), "filter.and");
        assert_eq!(field_of(json!({"and": [{"field": "a", "eq": 1}, {"field": "b", "gt": 1, "gte": 2}]})), "filter.and[1]");
        assert_eq!(field_of(json!({"field": "a", "eq": 1, "in": [1]})), "filter");
        assert_eq!(field_of(json!({"field": "a", "in": []})), "filter.in");
        let mut deep = json!({"field": "a", "eq": 1});
        for _ in 0..10 {
            deep = json!({"not": deep});
        }
        assert!(field_of(deep).starts_with("filter.not"));
    }
}
