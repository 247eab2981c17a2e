"""Levels 1 and 2 of a OneCommons settlement in DuckDB, on a CSV scenario.

The anchor for `commons settle` (see bench/settle.sh): the same exact
integer arithmetic (percentage cuts, largest-remainder splits with ties by
id) written as one SQL query over the same files. Prints the accounts that
levels 1-2 decide (general fund, providers, operators) as JSON, so the
script can check they equal commons' to the µCC, and the time and peak
memory on stderr.

    python bench/duckdb_settle.py DIR > accounts.json
"""

import json
import resource
import sys
import time
import tomllib
from pathlib import Path

import duckdb

DEFAULTS = dict(general_fund_bps=500, provider_share_bps=3000, developer_share_bps=2000,
                pass_bps=5000, cents_per_cc=100, reserve_contribution_bps=100)


def main(directory: str) -> None:
    root = Path(directory)
    params = dict(DEFAULTS)
    if (root / "params.toml").exists():
        params.update({k: v for k, v in tomllib.loads((root / "params.toml").read_text()).items() if k != "period"})
    f = lambda name: str(root / name)
    p = params
    query = f"""
    WITH
    subs AS (
        SELECT "user", ((paid_cents - paid_cents * {p['reserve_contribution_bps']} // 10000) * 1000000
                        // {p['cents_per_cc']})::HUGEINT AS escrow
        FROM read_csv('{f('subscriptions.csv')}', header = true,
                      columns = {{'user': 'VARCHAR', 'paid_cents': 'UBIGINT'}})),
    subs2 AS (SELECT "user", escrow * {p['general_fund_bps']} // 10000 AS fund,
                     escrow - escrow * {p['general_fund_bps']} // 10000 AS rest FROM subs),
    usage AS (
        SELECT u."user", u.site, u.active_minutes::HUGEINT AS minutes,
               coalesce(u.service_ms, 0)::HUGEINT AS service_ms, s.rest
        FROM read_csv('{f('usage.csv')}', header = true,
                      columns = {{'user': 'VARCHAR', 'site': 'VARCHAR', 'active_minutes': 'UBIGINT',
                                 'service_ms': 'UBIGINT'}}) u
        JOIN subs2 s USING ("user")),
    weighted AS (SELECT *, sum(minutes) OVER (PARTITION BY "user") AS total FROM usage),
    floored AS (SELECT *, CASE WHEN total > 0 THEN rest * minutes // total ELSE 0 END AS base,
                          CASE WHEN total > 0 THEN rest * minutes % total ELSE 0 END AS rem FROM weighted),
    ranked AS (SELECT *, rest - sum(base) OVER (PARTITION BY "user") AS leftover,
                      row_number() OVER (PARTITION BY "user" ORDER BY rem DESC, site) AS rank FROM floored),
    direct AS (SELECT "user", site, service_ms, total,
                      base + CASE WHEN rank <= leftover AND rem > 0 THEN 1 ELSE 0 END AS amount FROM ranked),
    unused AS (
        SELECT sum(rest) AS amount FROM subs2
        WHERE "user" NOT IN (SELECT "user" FROM weighted WHERE total > 0)),
    calls AS (
        SELECT c."user", c.site, c.service, c.ms::HUGEINT AS ms
        FROM read_csv('{f('calls.csv')}', header = true,
                      columns = {{'user': 'VARCHAR', 'site': 'VARCHAR', 'service': 'VARCHAR', 'ms': 'UBIGINT'}}) c
        SEMI JOIN subs2 s USING ("user")),
    with_calls AS (SELECT d.* FROM direct d SEMI JOIN calls c USING ("user", site)),
    recipients AS (
        SELECT "user", site, site AS recipient, service_ms AS w, amount FROM with_calls
        UNION ALL
        SELECT c."user", c.site, c.service, c.ms, d.amount FROM calls c JOIN with_calls d USING ("user", site)),
    r_weighted AS (SELECT *, sum(w) OVER (PARTITION BY "user", site) AS total FROM recipients),
    r_floored AS (SELECT *, CASE WHEN total > 0 THEN amount * w // total ELSE 0 END AS base,
                            CASE WHEN total > 0 THEN amount * w % total ELSE 0 END AS rem FROM r_weighted),
    r_ranked AS (SELECT *, amount - sum(base) OVER (PARTITION BY "user", site) AS leftover,
                        row_number() OVER (PARTITION BY "user", site ORDER BY rem DESC, recipient) AS rank
                 FROM r_floored),
    received AS (
        SELECT recipient AS site,
               CASE WHEN total = 0 THEN (CASE WHEN recipient = site THEN amount ELSE 0 END)
                    ELSE base + CASE WHEN rank <= leftover AND rem > 0 THEN 1 ELSE 0 END END AS amount
        FROM r_ranked
        UNION ALL
        SELECT d.site, d.amount FROM direct d ANTI JOIN calls c USING ("user", site)),
    site_totals AS (SELECT site, sum(amount) AS total FROM received GROUP BY site),
    sites AS (
        SELECT s.id, s.operator, s.project, t.total,
               t.total * coalesce(s.provider_share_bps, {p['provider_share_bps']}) // 10000 AS provider_cut
        FROM read_csv('{f('sites.csv')}', header = true,
                      columns = {{'id': 'VARCHAR', 'operator': 'VARCHAR', 'project': 'VARCHAR',
                                 'provider_share_bps': 'UBIGINT', 'developer_share_bps': 'UBIGINT'}}) s
        JOIN site_totals t ON t.site = s.id),
    site_rest AS (
        SELECT s.*, (total - provider_cut) * coalesce(d.developer_share_bps, {p['developer_share_bps']}) // 10000
                    AS developer_cut
        FROM sites s JOIN read_csv('{f('sites.csv')}', header = true,
                      columns = {{'id': 'VARCHAR', 'operator': 'VARCHAR', 'project': 'VARCHAR',
                                 'provider_share_bps': 'UBIGINT', 'developer_share_bps': 'UBIGINT'}}) d
        ON d.id = s.id),
    p_weighted AS (
        SELECT sp.provider, s.provider_cut AS amount, sp.site,
               coalesce(sp.resource_weight, 1)::HUGEINT AS w,
               sum(coalesce(sp.resource_weight, 1)::HUGEINT) OVER (PARTITION BY sp.site) AS total
        FROM read_csv('{f('site_providers.csv')}', header = true,
                      columns = {{'site': 'VARCHAR', 'provider': 'VARCHAR', 'resource_weight': 'UBIGINT'}}) sp
        JOIN sites s ON s.id = sp.site),
    p_floored AS (SELECT *, amount * w // total AS base, amount * w % total AS rem FROM p_weighted),
    p_ranked AS (SELECT *, amount - sum(base) OVER (PARTITION BY site) AS leftover,
                        row_number() OVER (PARTITION BY site ORDER BY rem DESC, provider) AS rank FROM p_floored),
    accounts AS (
        SELECT 'general-fund' AS account, (SELECT sum(fund) FROM subs2) + coalesce((SELECT amount FROM unused), 0) AS amount
        UNION ALL
        SELECT 'provider:' || provider, sum(base + CASE WHEN rank <= leftover AND rem > 0 THEN 1 ELSE 0 END)
        FROM p_ranked GROUP BY provider
        UNION ALL
        SELECT 'operator:' || operator, sum(total - provider_cut - developer_cut) FROM site_rest GROUP BY operator
        UNION ALL
        SELECT 'developer-cut:' || project, sum(developer_cut) FROM site_rest GROUP BY project)
    SELECT account, amount FROM accounts WHERE amount > 0 ORDER BY account
    """
    start = time.perf_counter()
    connection = duckdb.connect()
    rows = connection.execute(query).fetchall()
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    json.dump({"accounts": {account: int(amount) for account, amount in rows}}, sys.stdout, indent=1)
    print(f"duckdb {duckdb.__version__}: {seconds:.2f} s, peak {peak_mib:.0f} MiB", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
