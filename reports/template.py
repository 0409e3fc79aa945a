"""The report's HTML template (Jinja2, autoescaped).

Kept in a Python module rather than a .html.j2 file so that it ships with the package
without package-data settings. No script, no external resource: the file opens offline.
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="wiremark {{ version }}">
<title>{{ title }}</title>
<style>
:root { --fg: #1d2126; --muted: #5b6470; --line: #d9dde3; --bg-soft: #f5f7fa;
        --good: #1a7f37; --bad: #c62828; --warn: #9a6700; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       sans-serif; color: var(--fg); margin: 0; background: #fff; }
main { max-width: 1320px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 36px 0 10px; padding-bottom: 4px;
     border-bottom: 2px solid var(--line); }
h3 { font-size: 16px; margin: 20px 0 6px; }
p, li { max-width: 75em; }
.muted, .note { color: var(--muted); }
.note { font-size: 13px; font-style: italic; }
nav { font-size: 13px; margin: 10px 0 0; }
nav a { color: #0b5cad; margin-right: 14px; text-decoration: none; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 12.5px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 7px; text-align: left;
         vertical-align: top; white-space: nowrap; }
td.wrap { white-space: normal; min-width: 14em; }
.conf td { white-space: normal; }
th { background: var(--bg-soft); font-weight: 600; white-space: normal; vertical-align: bottom; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; max-width: 100%; }
.kv { width: 100%; }
.kv td:first-child { width: 14em; font-weight: 600; }
.kv td { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace;
         font-size: 12px; word-break: break-word; }
.verdict { border-left: 5px solid #1f77b4; background: var(--bg-soft); padding: 10px 16px;
           margin: 12px 0; border-radius: 0 6px 6px 0; }
.verdict .context { font-weight: 700; }
.verdict p { margin: 4px 0; }
.verdict table { margin: 6px 0 2px; background: #fff; }
.answer { font-size: 18px; font-weight: 700; margin: 8px 0; }
.pass { color: var(--good); font-weight: 700; }
.fail { color: var(--bad); font-weight: 700; }
.worse { color: var(--bad); font-weight: 600; }
.better { color: var(--good); font-weight: 600; }
.judged-not { color: var(--muted); }
.flag { color: var(--warn); font-weight: 600; }
.banner { padding: 8px 14px; border-radius: 6px; margin: 8px 0; font-weight: 600; }
.banner.ok { background: #e6f4ea; color: var(--good); }
.banner.bad { background: #fdecea; color: var(--bad); }
.banner.warn { background: #fff4d6; color: var(--warn); }
figure { margin: 18px 0 26px; }
figcaption { font-size: 13px; color: var(--muted); margin: 2px 0 6px; }
figure h3 { margin-bottom: 2px; }
svg.plot { display: block; max-width: 100%; height: auto; }
.conf td { min-width: 12em; }
.detail { font-size: 12px; color: var(--muted); display: block; font-weight: 400; }
</style>
</head>
<body>
<main>
{% macro table(t) -%}
<div class="scroll"><table{% if t.cls %} class="{{ t.cls }}"{% endif %}>
<thead><tr>{% for h in t.headers -%}
<th{% if h.cls %} class="{{ h.cls }}"{% endif %}>{{ h.text }}</th>
{%- endfor %}</tr></thead>
<tbody>
{% for row in t.rows -%}
<tr>{% for c in row -%}
<td{% if c.cls %} class="{{ c.cls }}"{% endif %}>{{ c.text }}
{%- if c.detail %}<span class="detail">{{ c.detail }}</span>{% endif %}</td>
{%- endfor %}</tr>
{% endfor -%}
</tbody></table></div>
{%- endmacro %}

<header id="header">
<h1>{{ title }}</h1>
<div class="muted">
{% for r in runs %}
<div>{% if multi %}<strong>{{ r.tag }}:</strong> {% endif %}<strong>{{ r.label }}</strong>
{%- if r.baseline %} (baseline){% endif %} —
 {{ r.date }} — scenario <strong>{{ r.scenario }}</strong> — {{ r.cells }} cells,
 {{ r.trials }} — {{ r.status }}</div>
{% endfor %}
<div>Report written {{ generated }} by wiremark {{ version }}.</div>
</div>
<nav>
<a href="#verdict">Verdict</a><a href="#claim">7–10× claim</a>
<a href="#clients">Client cost</a>
{% if tls_costs %}<a href="#tls">TLS cost</a>{% endif %}
{% if comparison %}<a href="#comparison">Comparison</a>{% endif %}
<a href="#plots">Plots</a><a href="#conformance">Conformance</a>
<a href="#validity">Validity ({{ validity.count }})</a><a href="#cells">All cells</a>
<a href="#environment">Environment</a>
</nav>
</header>

<section id="verdict">
<h2>Verdict</h2>
<p class="muted">Per model, the valid closed-loop cell with the highest concurrency. Ratios
of throughput are means over trials, with a bootstrap {{ ci_level }}% interval over trials
where there are several; a difference under {{ within }} is reported as “within”.</p>
{% for group in verdict_groups %}
{% if multi %}<h3>{{ group.run }}</h3>{% endif %}
{% for v in group.verdicts %}
<div class="verdict">
<p><span class="context">{{ v.context }}:</span> {{ v.text }}</p>
{% if v.against_baseline %}<p>{{ v.against_baseline }}</p>{% endif %}
{% for n in v.notes %}<p class="flag">{{ n }}</p>{% endfor %}
{% if v.table %}{{ table(v.table) }}{% endif %}
</div>
{% else %}
<p>No cells in this run.</p>
{% endfor %}
{% endfor %}
</section>

<section id="claim">
<h2>Is gRPC 7–10× faster than REST?</h2>
<p class="muted">The tutorials' claim, checked against these measurements: for each model,
payload and concurrency (closed loop, valid cells, medians across trials), {{ grpc_side }}'s
throughput and p50 as a ratio of {{ ratios_of }}. Throughput above 1× and p50 below 1× favour
{{ grpc_side }}. “Beats” means at least {{ within }} more requests per second.</p>
{% for c in claims %}
{% if multi %}<h3>{{ c.run }}</h3>{% endif %}
<p class="answer">{{ c.answer }}</p>
{% if c.per_model %}<ul>{% for line in c.per_model %}<li>{{ line }}</li>{% endfor %}</ul>{% endif %}
{% if c.crossovers %}<p><strong>Crossover</strong> ({{ c.crossover_heading }}):</p>
<ul>{% for line in c.crossovers %}<li>{{ line }}</li>{% endfor %}</ul>{% endif %}
{% if c.table %}{{ table(c.table) }}{% endif %}
{% endfor %}
</section>

<section id="clients">
<h2>What the client pays</h2>
<p class="muted">CPU per request on each side of the wire (closed loop, valid cells, medians
across trials): the server's, and the load generator's for each client library measured.
The lean clients (one prepared HTTP/1.1 request, or prepared HTTP/2 frames for gRPC)
measure the server; the library clients (grpcio, httpx) are what a stock Python client
pays per call, and so what a caller of this service would spend.</p>
{% for c in client_costs %}
{% if multi %}<h3>{{ c.run }}</h3>{% endif %}
<p class="answer">{{ c.summary }}</p>
{% if c.table %}{{ table(c.table) }}{% endif %}
{% endfor %}
</section>

{% if tls_costs %}
<section id="tls">
<h2>What TLS costs</h2>
<p class="muted">Each closed-loop cell measured plaintext and over TLS (same model, payload,
users, transport and client; valid cells, medians across trials), every client verifying
the server's certificate. Wire bytes are per request on a kept-alive connection, TLS
records included; the handshake, once per connection, is not in them.</p>
{% for c in tls_costs %}
{% if multi %}<h3>{{ c.run }}</h3>{% endif %}
<p class="answer">{{ c.summary }}</p>
{% if c.table %}{{ table(c.table) }}{% endif %}
{% endfor %}
</section>
{% endif %}

{% if comparison %}
<section id="comparison">
<h2>Comparison of runs</h2>
<p class="muted">Each cell (same model, transport, load and payload) in every run, medians
across trials; changes against the baseline <strong>{{ comparison.baseline }}</strong>.
Red: a regression as <code>wiremark gate</code> judges it with its default rules
({{ comparison.rules }}): a change beyond the rule's threshold, significant at alpha
{{ comparison.alpha }} over the trials; green: an improvement, judged the same way; “not
judged”: too few trials to tell; uncoloured: neither, or no rule for that column.</p>
<ul>{% for s in comparison.summaries %}<li>{{ s }}</li>{% endfor %}</ul>
<p>Columns: {% for t in tags -%}
<strong>{{ t.tag }}</strong> = {{ t.run }}{% if t.baseline %} (baseline){% endif %}
{{- "; " if not loop.last }}
{%- endfor %}; Δ = change against A.</p>
{{ table(comparison.table) }}
</section>
{% endif %}

<section id="plots">
<h2>Plots</h2>
{% for p in plots %}
<figure id="{{ p.id }}">
<h3 id="{{ p.id }}-t">{{ p.title }}</h3>
<figcaption>{{ p.caption }}</figcaption>
{% if p.svg %}{{ p.svg | safe }}{% endif %}
{% if p.note %}<p class="note">{{ p.note }}</p>{% endif %}
</figure>
{% endfor %}
</section>

<section id="conformance">
<h2>Conformance</h2>
<p class="muted">Each backend's outputs against the in-process reference on a fixed input set
(worst = largest probability or confidence deviation), and replies sampled during load and
checked against the same reference.</p>
{% for m in conformance %}
{% if multi %}<h3>{{ m.run }}</h3>{% endif %}
{% if m.banner %}<div class="banner {{ m.banner_cls }}">{{ m.banner }}</div>{% endif %}
{% if m.table %}{{ table(m.table) }}{% endif %}
{% if m.note %}<p class="note">{{ m.note }}</p>{% endif %}
{% endfor %}
</section>

<section id="validity">
<h2>Validity</h2>
<div class="banner {{ validity.level }}">{{ validity.summary }}</div>
{% if validity.table %}{{ table(validity.table) }}{% endif %}
</section>

<section id="cells">
<h2>All cells</h2>
<p class="muted">The numbers behind the plots: one row per cell, medians across trials
(errors: total over trials). Latencies in ms, bytes per request, CPU in ms per request.</p>
{% for t in cells_tables %}
<h3>{{ t.title }}</h3>
{{ table(t.table) }}
{% else %}<p>No cells.</p>{% endfor %}
</section>

<section id="environment">
<h2>Environment</h2>
<p class="muted">Machine, versions, commit, scenario, placement and settings of each run.{%
 if multi %} Values that differ from the baseline are highlighted.{% endif %}</p>
{{ table(environment) }}
</section>
</main>
</body>
</html>
"""
