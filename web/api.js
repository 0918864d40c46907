// Renders the API reference (api.html) from /openapi.json, offline.
const spec = await (await fetch("/openapi.json")).json();
function el(tag, props = {}, ...children) {
  const element = Object.assign(document.createElement(tag), props);
  element.append(...children);
  return element;
}
const deref = (node) => (node?.$ref ? spec.components[node.$ref.split("/")[2]][node.$ref.split("/")[3]] : node);
const refName = (node) => node?.$ref?.split("/").pop();

document.getElementById("intro").append(
  el("h2", { textContent: `${spec.info.title} ${spec.info.version}` }),
  el("p", { textContent: spec.info.summary }),
  el("p", { textContent: spec.info.description }),
);

const operations = document.getElementById("operations");
operations.append(el("h2", { textContent: "Operations" }));
for (const [path, item] of Object.entries(spec.paths)) {
  for (const [method, op] of Object.entries(item)) {
    const box = el("div", { className: "op", id: `op-${op.operationId}` });
    box.append(el("p", {}, el("span", { className: "method", textContent: method.toUpperCase() }), " ", el("span", { className: "path", textContent: path }), ` — ${op.summary}`));
    if (op.description) box.append(el("p", { className: "help", textContent: op.description }));
    const params = (op.parameters ?? []).map(deref);
    if (params.length) {
      const table = el("table", {}, el("tr", {}, el("th", { textContent: "parameter" }), el("th", { textContent: "in" }), el("th", { textContent: "required" }), el("th", { textContent: "schema" })));
      for (const p of params) table.append(el("tr", {}, el("td", { textContent: p.name }), el("td", { textContent: p.in }), el("td", { textContent: p.required ? "yes" : "no" }), el("td", { textContent: refName(p.schema) ?? JSON.stringify(p.schema) })));
      box.append(table);
    }
    const body = op.requestBody?.content?.["application/json"]?.schema;
    if (body) box.append(el("p", { textContent: `Body: ${refName(body)}` }));
    const responses = el("table", {}, el("tr", {}, el("th", { textContent: "status" }), el("th", { textContent: "response" })));
    for (const [status, response] of Object.entries(op.responses)) {
      const r = deref(response);
      const [type, media] = Object.entries(r.content ?? {})[0] ?? ["", {}];
      const schema = media.schema;
      const shown = refName(schema) ?? (schema?.items ? `array of ${refName(schema.items)}` : "");
      responses.append(el("tr", {}, el("td", { textContent: status }), el("td", { textContent: `${r.description}${type ? ` — ${type}` : ""}${shown ? ` ${shown}` : ""}` })));
    }
    box.append(responses);
    operations.append(box);
  }
}

const schemas = document.getElementById("schemas");
for (const [name, schema] of Object.entries(spec.components.schemas)) {
  schemas.append(el("h3", { id: `schema-${name}`, textContent: name }), el("pre", { textContent: JSON.stringify(schema, null, 2) }));
}
