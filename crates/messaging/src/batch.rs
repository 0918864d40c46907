//! Statements that apply a whole batch — a consumer's messages, a relay's confirmed rows — at
//! once, their columns bound as arrays.

/// The `count` rows of a batch whose columns are bound as arrays — `unnest` is
/// `unnest($1::…[], …) AS r(…)` — as a query, for a statement that writes the batch at once.
///
/// `count`, rounded up to a power of two, is written into it as a `LIMIT` (never fewer rows than
/// the batch holds). A prepared statement's plan does not know a bound array's length — it
/// assumes ten rows — so a statement for one row would be planned as if for ten: a hash of a
/// whole table where one probe of an index does; or, that plan looking dear next to one made for
/// the actual values, PostgreSQL plans the statement anew for every batch. With the size written
/// in, each size class is a statement of its own, planned once per connection and kept.
pub fn rows(unnest: &str, count: usize) -> String {
    format!("SELECT * FROM {unnest} LIMIT {}", size_class(count))
}

/// The size class of a batch of `count` rows: `count` rounded up to a power of two (see
/// [`rows`]), for a statement that writes its `LIMIT` itself.
pub fn size_class(count: usize) -> usize {
    count.max(1).next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::rows;

    #[test]
    fn the_size_class_is_the_count_rounded_up_to_a_power_of_two_and_never_drops_a_row() {
        let limit = |count| {
            let sql = rows("unnest($1::int[]) AS r(v)", count);
            let (_, limit) = sql.rsplit_once("LIMIT ").expect("a LIMIT");
            limit.parse::<usize>().expect("a number")
        };
        assert_eq!(limit(0), 1);
        assert_eq!(limit(1), 1);
        assert_eq!(limit(2), 2);
        assert_eq!(limit(3), 4);
        assert_eq!(limit(64), 64);
        assert_eq!(limit(65), 128);
        assert!((1..300).all(|count| limit(count) >= count));
    }
}
