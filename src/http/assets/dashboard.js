// Starling dashboard: polls /api/dashboard every second and updates the page. No dependencies.
// Client ids and topics come from clients: they are only ever set as text, never as HTML.
(function () {
  'use strict';
  var fragment = new URLSearchParams(location.hash.slice(1));
  var token = fragment.get('token') || sessionStorage.getItem('starling-token') || '';
  if (fragment.get('token')) sessionStorage.setItem('starling-token', token);
  var updates = 0;

  function byId(id) { return document.getElementById(id); }
  function setText(id, value) { byId(id).textContent = String(value); }
  function setStatus(text, kind) {
    var el = byId('status');
    el.textContent = text;
    el.className = 'status ' + (kind || '');
  }
  function duration(seconds) {
    var d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600);
    var m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
    return (d ? d + 'd ' : '') + (d || h ? h + 'h ' : '') + (d || h || m ? m + 'm ' : '') + s + 's';
  }
  function rows(id, items, cells) {
    var body = byId(id);
    while (body.firstChild) body.removeChild(body.firstChild);
    items.forEach(function (item) {
      var tr = document.createElement('tr');
      cells(item).forEach(function (cell) {
        var td = document.createElement('td');
        td.textContent = String(cell[0]);
        if (cell[1]) td.className = cell[1];
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
  }
  function chart(history) {
    var max = 1;
    history.forEach(function (p) { max = Math.max(max, p[1], p[2]); });
    var width = 600, height = 160, span = 300;
    var last = history.length ? history[history.length - 1][0] : 0;
    function points(index) {
      return history.map(function (p) {
        var x = width - (last - p[0]) * width / span;
        var y = height - 1 - p[index] * (height - 16) / max;
        return x.toFixed(1) + ',' + y.toFixed(1);
      }).join(' ');
    }
    byId('line-in').setAttribute('points', points(1));
    byId('line-out').setAttribute('points', points(2));
    setText('chart-max', max.toFixed(1) + '/s');
  }
  function render(d) {
    setText('connections', d.connections);
    setText('rate-in', d.rate_in.toFixed(1));
    setText('rate-out', d.rate_out.toFixed(1));
    setText('sessions', d.sessions);
    setText('subscriptions', d.subscriptions);
    setText('retained', d.retained);
    setText('queued', d.queued_messages);
    setText('dropped', d.dropped);
    setText('uptime', duration(d.uptime_seconds));
    chart(d.history);
    rows('top-topics', d.top_topics, function (t) { return [[t.topic], [t.rate.toFixed(1), 'num']]; });
    rows('deepest', d.deepest_queues, function (q) {
      return [[q.client_id], [q.queued, 'num'], [q.queued_bytes, 'num'], [q.online ? 'online' : 'offline']];
    });
    rows('disconnects', d.recent_disconnects, function (x) {
      return [[new Date(x.at * 1000).toLocaleTimeString()], [x.client_id], [x.reason]];
    });
  }
  function poll() {
    var headers = token ? { Authorization: 'Bearer ' + token } : {};
    fetch('/api/dashboard', { headers: headers, cache: 'no-store' })
      .then(function (response) {
        if (response.status === 401) throw new Error('needs the token: open /#token=...');
        if (!response.ok) throw new Error('HTTP ' + response.status);
        return response.json();
      })
      .then(function (data) {
        render(data);
        updates += 1;
        setText('updates', updates);
        setStatus('live', 'live');
      })
      .catch(function (e) { setStatus(e.message, 'error'); });
  }
  poll();
  setInterval(poll, 1000);
})();
