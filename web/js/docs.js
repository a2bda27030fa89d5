// Swagger UI over the gateway's own OpenAPI document. "Try it out" calls this gateway; the
// token the web app signed in with (sessionStorage) is used as the bearer token, or paste one
// with "Authorize".
/* global SwaggerUIBundle */
"use strict";
const token = sessionStorage.getItem("flowviz.token");
document.getElementById("docs-auth").textContent = token
  ? "signed in from the app: its token is used for “Try it out”"
  : "sign in on the app first, or paste a token with “Authorize”";
const ui = SwaggerUIBundle({
  url: "/api/openapi.json",
  dom_id: "#swagger",
  deepLinking: true,
  tryItOutEnabled: false,
  persistAuthorization: false,
  onComplete: () => {
    if (token) ui.preauthorizeApiKey("bearerAuth", token);
  },
});
