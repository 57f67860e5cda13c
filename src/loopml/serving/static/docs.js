// Starts Swagger UI on /docs (templates/docs.html). A file, not an inline script: the page's
// Content-Security-Policy runs scripts of this server only.
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    // No call to the public validator (validator.swagger.io): nothing leaves this server.
    validatorUrl: null,
  });
})();
