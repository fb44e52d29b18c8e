// Screenshot a page of a running Home Assistant in a real browser (Debian's chromium
// through npm's playwright-core): log in, open the device of an entity (--entity) or an
// integration's options dialog (--options-of DOMAIN), wait until the page shows a text,
// click some texts (--click "Status,Attributes"), save a PNG. Run through scripts/screenshot, which installs what it needs.
//
//   scripts/screenshot --url http://127.0.0.1:8123 --user demo --password ... \
//     --entity sensor.ha_ingestor_forwarder_status --wait-for "Waiting for a service" \
//     --out docs/images/forwarder-outage.png
// playwright-core is installed outside the checkout; the wrapper says where.
const { chromium } = await import(process.env.PLAYWRIGHT_CORE ?? "playwright-core");

function options(argv) {
  const wanted = ["url", "user", "password", "out"];
  const parsed = {
    entity: null,
    "options-of": null,
    "wait-for": null,
    click: null,
    width: "1280",
    height: "900",
    timeout: "120",
  };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    if (!(wanted.includes(key) || key in parsed) || argv[i + 1] === undefined) {
      throw new Error(`unknown or incomplete option ${argv[i]}`);
    }
    parsed[key] = argv[i + 1];
  }
  for (const key of wanted) {
    if (!parsed[key]) throw new Error(`--${key} is required`);
  }
  if (!parsed.entity === !parsed["options-of"]) {
    throw new Error("give one of --entity and --options-of");
  }
  return parsed;
}

async function logIn(page, url, user, password) {
  await page.goto(url);
  // The login form lives in the frontend's shadow DOM; playwright's CSS pierces it.
  await page.locator('input[name="username"]').fill(user);
  await page.locator('input[name="password"]').fill(password);
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.querySelector("home-assistant")?.hass?.user);
}

async function deviceOf(page, entityId) {
  const deviceId = await page.waitForFunction(
    (id) => document.querySelector("home-assistant")?.hass?.entities?.[id]?.device_id,
    entityId,
  );
  return deviceId.jsonValue();
}

async function main() {
  const opts = options(process.argv.slice(2));
  const timeout = Number(opts.timeout) * 1000;
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox"],
  });
  try {
    const page = await browser.newPage({
      viewport: { width: Number(opts.width), height: Number(opts.height) },
      colorScheme: "light",
    });
    page.setDefaultTimeout(timeout);
    await logIn(page, opts.url, opts.user, opts.password);
    if (opts.entity) {
      const device = await deviceOf(page, opts.entity);
      await page.goto(`${opts.url}/config/devices/device/${device}`);
    } else {
      await page.goto(`${opts.url}/config/integrations/integration/${opts["options-of"]}`);
      await page.getByRole("button", { name: "Configure" }).first().click();
    }
    if (opts["wait-for"]) {
      await page.getByText(opts["wait-for"], { exact: false }).first().waitFor();
    }
    // Then click these texts in turn (comma-separated), e.g. an entity, then "Attributes".
    for (const text of (opts.click ?? "").split(",").filter(Boolean)) {
      await page.getByText(text, { exact: true }).first().click();
      await page.waitForTimeout(800);
    }
    await page.waitForTimeout(1500); // let the cards finish drawing
    await page.screenshot({ path: opts.out });
    console.log(`saved ${opts.out}`);
  } finally {
    await browser.close();
  }
}

main().catch((err) => {
  console.error(err.message ?? err);
  process.exit(1);
});
