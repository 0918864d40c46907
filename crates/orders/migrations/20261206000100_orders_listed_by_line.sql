-- A user's orders are listed newest first by their place in the user's line (seq), so the
-- unique (user_id, seq) index serves the list and its pages; the index by creation time is
-- one write less for every order placed and every status it takes.
DROP INDEX orders_by_user;
