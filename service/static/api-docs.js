// The interactive API page: Swagger UI on the gateway's OpenAPI document. Calls made from
// it carry the dashboard's session cookie (same origin), or paste a key in "Authorize".
window.ui = SwaggerUIBundle({
  url: "/api/v1/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  withCredentials: true,
});
