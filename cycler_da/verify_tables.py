"""Terminal tables of ``cycler verify`` (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

LEADS = ("24", "72", "120")


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _rmse_rows(table: Table, name: str, s: dict, labels: list[str]) -> None:
    """One run's (or setting's) RMSE rows: analysis, background, forecasts, spread/skill."""
    table.add_row(name, "analysis", *(_fmt(s["analysis_rmse"][c]) for c in labels))
    table.add_row("", "background", *(_fmt(s["background_rmse"][c]) for c in labels))
    for lead in LEADS:
        if s.get("forecast_rmse") and lead in s["forecast_rmse"][labels[0]]:
            table.add_row("", f"forecast {lead} h", *(_fmt(s["forecast_rmse"][c][lead]) for c in labels))
    if "spread_skill" in s:
        table.add_row("", "spread/skill (bg)", *(f"{s['spread_skill'][c]:.2f}" for c in labels))
    table.add_section()


def print_tables(runs, summaries: list[dict], card: list[dict], console: Console | None = None) -> None:
    console = console or Console(width=200)
    labels = runs[0].labels
    head = Table(title="Runs", title_justify="left")
    for col in ("run", "method", "members", "windows", "period", "flagged"):
        head.add_column(col)
    for s, r in zip(summaries, runs, strict=True):
        head.add_row(
            r.name,
            s["method"],
            str(s["members"]),
            str(s["windows"]),
            f"{s['first_window']} … {s['last_window']}",
            ", ".join([str(len(s["flagged_windows"])), *s["flagged_windows"][:4]]),
        )
    console.print(head)

    table = Table(
        title="RMSE against the truth: sqrt(time-mean area-weighted MSE), physical units",
        title_justify="left",
    )
    table.add_column("run")
    table.add_column("quantity")
    for label in labels:
        table.add_column(label, justify="right")
    for s, r in zip(summaries, runs, strict=True):
        _rmse_rows(table, r.name, s, labels)
    console.print(table)

    if any("balance" in s and s["balance"] for s in summaries):
        bal = Table(
            title="Balance (time means): ageostrophic wind at 500 hPa poleward of 20° (m/s); "
            "850–500 hPa hypsometric residual (m² s⁻²); truth: the same of the true states",
            title_justify="left",
        )
        keys = [
            f"{b}_{k}"
            for b in ("geostrophic", "hydrostatic", "thermal")
            for k in ("analysis", "increment", "truth")
        ]
        bal.add_column("run")
        for key in keys:
            bal.add_column(key.replace("_", " "), justify="right")
        for s, r in zip(summaries, runs, strict=True):
            b = s.get("balance", {})
            bal.add_row(r.name, *(_fmt(b[k]) if k in b else "–" for k in keys))
        console.print(bal)

    if card:
        sc = Table(
            title=f"Scorecard against {runs[0].name}: % RMSE change (negative = better), "
            "* p < 0.05 (paired t-test, sample size deflated for lag-1 autocorrelation)",
            title_justify="left",
        )
        sc.add_column("run")
        sc.add_column("score")
        for label in labels:
            sc.add_column(label, justify="right")
        for run in runs[1:]:
            rows = {row["channel"]: row for row in card if row["run"] == run.name}
            keys = ["analysis"] + [
                f"{lead}h" for lead in LEADS if any(f"{lead}h" in r for r in rows.values())
            ]
            for k, key in enumerate(keys):
                cells = []
                for label in labels:
                    value = rows[label].get(key)
                    if value is None:
                        cells.append("–")
                        continue
                    change, p = value
                    style = "green" if change < 0 else "red"
                    mark = "*" if p < 0.05 else " "
                    cells.append(
                        f"[{style}]{change:+.1f}{mark}[/{style}]" if p < 0.05 else f"{change:+.1f}{mark}"
                    )
                sc.add_row(run.name if k == 0 else "", key, *cells)
            sc.add_section()
        console.print(sc)


def print_sweep_tables(summaries: list[dict], card: list[dict], console: Console | None = None) -> None:
    """The settings of a sweep, their RMSEs pooled over starts, and the pooled scorecard."""
    console = console or Console(width=200)
    labels = list(summaries[0]["analysis_rmse"])
    head = Table(title="Settings (runs pooled over start dates and seeds)", title_justify="left")
    for col in ("setting", "method", "starts", "seeds", "windows"):
        head.add_column(col)
    for s in summaries:
        head.add_row(
            s["setting"],
            s["method"],
            ", ".join(s["starts"]),
            ", ".join(map(str, s["seeds"])),
            str(s["windows"]),
        )
    console.print(head)

    table = Table(title="RMSE over every window of every start: sqrt(mean MSE)", title_justify="left")
    table.add_column("setting")
    table.add_column("quantity")
    for label in labels:
        table.add_column(label, justify="right")
    for s in summaries:
        _rmse_rows(table, s["setting"], s, labels)
    console.print(table)

    if not card:
        return
    sc = Table(
        title=f"Scorecard against {summaries[0]['setting']}: % RMSE change (negative = better), * p < 0.05 "
        "(paired t-test pooled over starts, each start's sample size deflated for lag-1 autocorrelation); "
        "(k/n): the change has this sign at k of n starts",
        title_justify="left",
    )
    sc.add_column("setting")
    sc.add_column("score")
    for label in labels:
        sc.add_column(label, justify="right")
    for setting in dict.fromkeys(row["setting"] for row in card):
        rows = {row["channel"]: row for row in card if row["setting"] == setting}
        keys = ["analysis"] + [f"{lead}h" for lead in LEADS if any(f"{lead}h" in r for r in rows.values())]
        for k, key in enumerate(keys):
            cells = []
            for label in labels:
                value = rows[label].get(key)
                if value is None:
                    cells.append("–")
                    continue
                change, p = value["rmse_change_percent"], value["p_value"]
                text = f"{change:+.1f}{'*' if p < 0.05 else ' '} ({value['starts_same_sign']}/{rows[label]['starts']})"
                style = "green" if change < 0 else "red"
                cells.append(f"[{style}]{text}[/{style}]" if p < 0.05 else text)
            sc.add_row(setting if k == 0 else "", key, *cells)
        sc.add_section()
    console.print(sc)
