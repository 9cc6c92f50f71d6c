-- One wrk script for every SCIM workload of scripts/bench.sh.
--   wrk ... -s scim.lua URL -- MODE TOKEN [FILE] [PARAM] [OFFSET]
-- MODE:
--   plain           GET the URL as given (e.g. a page: /Users?startIndex=50001&count=100)
--   get_id          GET {URL}/Users/{id}, ids rotating over FILE (one per line)
--   filter          GET {URL}/Users?filter=userName eq "NAME", names rotating over FILE
--   post            POST {URL}/Users with a unique userName (PARAM: a prefix unique to the run)
--   patch           PATCH {URL}/Groups/{PARAM} adding one member, member ids from FILE
--                   starting at OFFSET, each thread taking every n-th id, so that no id is
--                   added twice to the group within a run
-- At the end it prints one JSON line prefixed "WRK_JSON " with requests, req/s, latency
-- percentiles (microseconds), errors by kind, and the first non-2xx answer it saw
-- (writes only: reading answers costs the load generator time on GETs).
--
-- Several replicas: WRK_HOSTS="127.0.0.1:P1,127.0.0.1:P2,..." (environment) sends thread i
-- to host ((i - 1) mod #hosts) + 1 instead of the URL's host (run one thread per host, and
-- a number of connections divisible by the number of threads: wrk gives each thread
-- connections / threads). The URL's host:port stays in the Host header; the path and
-- the ids are the same for every replica, since the replicas share one database.
-- One wrk process thus keeps one latency histogram over all replicas, and the PATCH
-- partition below (by thread) still never adds one id twice.

local threads = {}
local counter = 1
local hosts = {}
for h in string.gmatch(os.getenv("WRK_HOSTS") or "", "[^,%s]+") do hosts[#hosts + 1] = h end

function setup(thread)
   thread:set("tid", counter)
   if #hosts > 0 then
      local host, port = string.match(hosts[(counter - 1) % #hosts + 1], "^(.*):(%d+)$")
      thread.addr = wrk.lookup(host, port)[1]
   end
   counter = counter + 1
   table.insert(threads, thread)
end

local function lines(path)
   local t = {}
   for line in io.lines(path) do
      if #line > 0 then t[#t + 1] = line end
   end
   return t
end

local function urlencode(s)
   return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

local mode, items, param, n, step, offset, root
first_error = ""

function init(args)
   mode = args[1]
   local token = args[2]
   wrk.headers["Authorization"] = (token ~= nil and token ~= "") and ("Bearer " .. token) or nil
   wrk.headers["Accept"] = "application/scim+json"
   wrk.headers["Content-Type"] = "application/scim+json"
   if args[3] ~= nil and args[3] ~= "" then items = lines(args[3]) end
   param = args[4]
   offset = tonumber(args[5] or "0") or 0
   root = wrk.path:gsub("/$", "")
   step = #threads > 0 and #threads or tonumber(os.getenv("WRK_THREADS") or "2")
   n = tid or 1
   if mode == "post" or mode == "patch" then
      response = function(status, headers, body)
         if status >= 300 and first_error == "" then
            first_error = status .. " " .. string.sub(body or "", 1, 400)
         end
      end
   end
end

local k = 0
function request()
   k = k + 1
   if mode == "plain" then
      return wrk.format("GET", wrk.path)
   elseif mode == "get_id" then
      local id = items[(k * 7919 + n) % #items + 1]
      return wrk.format("GET", root .. "/Users/" .. id)
   elseif mode == "filter" then
      local name = items[(k * 7919 + n) % #items + 1]
      return wrk.format("GET", root .. "/Users?filter=" .. urlencode('userName eq "' .. name .. '"'))
   elseif mode == "post" then
      local name = string.format("%s-t%d-%d@example.com", param, n, k)
      local body = '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"' .. name ..
         '","name":{"givenName":"Bench","familyName":"Post"},"displayName":"Bench Post",' ..
         '"emails":[{"value":"' .. name .. '","type":"work","primary":true}],"active":true}'
      return wrk.format("POST", root .. "/Users", nil, body)
   elseif mode == "patch" then
      local index = (offset + (k - 1) * step + (n - 1)) % #items + 1
      local body = '{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":' ..
         '[{"op":"add","path":"members","value":[{"value":"' .. items[index] .. '"}]}]}'
      return wrk.format("PATCH", root .. "/Groups/" .. param .. "?excludedAttributes=members", nil, body)
   end
end

function done(summary, latency, requests)
   local errors = summary.errors
   local seconds = summary.duration / 1e6
   local first = ""
   for _, t in ipairs(threads) do
      local e = t:get("first_error")
      if e ~= nil and e ~= "" and first == "" then first = e end
   end
   first = first:gsub("\\", "\\\\"):gsub('"', '\\"'):gsub("[%c]", " ")
   io.write(string.format(
      'WRK_JSON {"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
      '"max_us":%d,"mean_us":%.1f,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"first_error":"%s"}\n',
      summary.requests, seconds, summary.requests / seconds,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      latency.mean, errors.connect, errors.read, errors.write, errors.status, errors.timeout, first))
end
