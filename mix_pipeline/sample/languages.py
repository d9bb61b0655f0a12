"""Pages in French, German, Spanish, Italian, Portuguese and Dutch, from sentence templates."""

from __future__ import annotations

import functools
from random import Random

# Sentence parts per language: subject, verb, object, adverbial, opener, linker.
# German and Dutch are verb-second, so an opener moves the verb before the subject.
_LANGUAGE_PARTS: dict[str, dict[str, str]] = {
    "fr": {
        "subj": "le gouvernement|la ville|les enfants|notre équipe|le directeur|la plupart des gens|mon voisin|"
        "cette entreprise|le professeur|les habitants du village|la commission européenne|un jeune médecin|"
        "les étudiants|ma famille|le maire de la commune|une association locale|les chercheurs|le public|"
        "la banque centrale|chaque citoyen|le journal|les agriculteurs|notre société|la région|le ministre",
        "verb": "présente|prépare|examine|défend|achète|construit|attend|demande|propose|organise|découvre|"
        "soutient|réduit|change|explique|publie|utilise|cherche|protège|développe|accepte|partage|améliore|"
        "critique|annonce",
        "obj": "un nouveau projet|les résultats de l'enquête|une solution simple|le budget de l'année|"
        "des maisons plus grandes|la réforme des retraites|un accord avec les syndicats|les prix de l'énergie|"
        "une grande fête|le programme scolaire|des livres anciens|la qualité de l'eau|un plan de transport|"
        "les droits des travailleurs|une exposition sur l'histoire|le marché du travail|des idées très différentes|"
        "la sécurité des routes|un rapport détaillé|les besoins des familles|une petite boutique|"
        "le développement durable|des outils pour les écoles|la langue française|un voyage en train",
        "adv": "depuis plusieurs années|pendant la semaine prochaine|avec beaucoup de patience|"
        "dans le centre de la ville|sans aucune difficulté|malgré la crise économique|pour la première fois|"
        "avant la fin du mois|selon les experts|grâce à leurs efforts|chaque matin|sous la pluie|"
        "au début de l'été|dans toute la France|avec le soutien de l'État|après une longue discussion|"
        "près de la gare|pour les prochaines générations|chez nos voisins|tout au long de l'hiver",
        "open": "Aujourd'hui,|En effet,|Cependant,|Par ailleurs,|Depuis quelque temps,|Selon le rapport,|"
        "Pourtant,|En plus,|D'après nous,|Hier soir,",
        "link": "mais|et|parce que|alors que|tandis que|puisque|donc|car",
    },
    "de": {
        "subj": "die Regierung|die Stadt|die Kinder|unser Team|der Direktor|die meisten Leute|mein Nachbar|"
        "diese Firma|der Lehrer|die Einwohner des Dorfes|die Europäische Kommission|ein junger Arzt|"
        "die Studenten|meine Familie|der Bürgermeister|ein örtlicher Verein|die Forscher|das Publikum|"
        "die Zentralbank|jeder Bürger|die Zeitung|die Bauern|unsere Gesellschaft|das Land|der Minister",
        "verb": "präsentiert|plant|prüft|verteidigt|kauft|baut|erwartet|verlangt|fordert|organisiert|entdeckt|"
        "unterstützt|senkt|ändert|erklärt|veröffentlicht|benutzt|sucht|schützt|entwickelt|akzeptiert|teilt|"
        "verbessert|kritisiert|diskutiert",
        "obj": "ein neues Projekt|die Ergebnisse der Umfrage|eine einfache Lösung|den Haushalt für das nächste Jahr|"
        "größere Wohnungen|die Reform der Rente|einen Vertrag mit den Gewerkschaften|die Preise für Energie|"
        "ein großes Fest|den Lehrplan der Schule|alte Bücher|die Qualität des Wassers|einen Plan für den Verkehr|"
        "die Rechte der Arbeiter|eine Ausstellung über die Geschichte|den Arbeitsmarkt|ganz andere Ideen|"
        "die Sicherheit auf den Straßen|einen ausführlichen Bericht|die Bedürfnisse der Familien|"
        "einen kleinen Laden|die nachhaltige Entwicklung|neue Werkzeuge für die Schulen|die deutsche Sprache|"
        "eine Reise mit dem Zug",
        "adv": "seit mehreren Jahren|in der nächsten Woche|mit viel Geduld|im Zentrum der Stadt|"
        "ohne große Schwierigkeiten|trotz der Wirtschaftskrise|zum ersten Mal|vor dem Ende des Monats|"
        "nach Ansicht der Experten|dank ihrer Bemühungen|jeden Morgen|bei strömendem Regen|"
        "am Anfang des Sommers|in ganz Deutschland|mit der Unterstützung des Staates|nach einer langen Diskussion|"
        "in der Nähe des Bahnhofs|für die kommenden Generationen|bei unseren Nachbarn|den ganzen Winter über",
        "open": "Heute|Außerdem|Trotzdem|Seit einiger Zeit|Laut dem Bericht|Dennoch|Gestern Abend|Nun|Deshalb|"
        "Im Moment",
        "link": "aber|und|denn|doch|oder",
    },
    "es": {
        "subj": "el gobierno|la ciudad|los niños|nuestro equipo|el director|la mayoría de la gente|mi vecino|"
        "esta empresa|el profesor|los habitantes del pueblo|la comisión europea|un joven médico|los estudiantes|"
        "mi familia|el alcalde del municipio|una asociación local|los investigadores|el público|el banco central|"
        "cada ciudadano|el periódico|los agricultores|nuestra sociedad|la región|el ministro",
        "verb": "presenta|prepara|examina|defiende|compra|construye|espera|pide|propone|organiza|descubre|apoya|"
        "reduce|cambia|explica|publica|utiliza|busca|protege|desarrolla|acepta|comparte|mejora|critica|anuncia",
        "obj": "un nuevo proyecto|los resultados de la encuesta|una solución sencilla|el presupuesto del año|"
        "casas más grandes|la reforma de las pensiones|un acuerdo con los sindicatos|los precios de la energía|"
        "una gran fiesta|el programa escolar|libros antiguos|la calidad del agua|un plan de transporte|"
        "los derechos de los trabajadores|una exposición sobre la historia|el mercado laboral|"
        "ideas muy diferentes|la seguridad de las carreteras|un informe detallado|las necesidades de las familias|"
        "una pequeña tienda|el desarrollo sostenible|herramientas para las escuelas|la lengua española|"
        "un viaje en tren",
        "adv": "desde hace varios años|durante la próxima semana|con mucha paciencia|en el centro de la ciudad|"
        "sin ninguna dificultad|a pesar de la crisis económica|por primera vez|antes del final del mes|"
        "según los expertos|gracias a sus esfuerzos|cada mañana|bajo la lluvia|al principio del verano|"
        "en toda España|con el apoyo del Estado|después de una larga discusión|cerca de la estación|"
        "para las próximas generaciones|en casa de nuestros vecinos|a lo largo del invierno",
        "open": "Hoy,|En efecto,|Sin embargo,|Además,|Desde hace tiempo,|Según el informe,|No obstante,|También,|"
        "En nuestra opinión,|Anoche,",
        "link": "pero|y|porque|mientras que|aunque|ya que|así que|pues",
    },
    "it": {
        "subj": "il governo|la città|i bambini|la nostra squadra|il direttore|la maggior parte della gente|"
        "il mio vicino|questa azienda|il professore|gli abitanti del paese|la commissione europea|"
        "un giovane medico|gli studenti|la mia famiglia|il sindaco del comune|un'associazione locale|"
        "i ricercatori|il pubblico|la banca centrale|ogni cittadino|il giornale|gli agricoltori|"
        "la nostra società|la regione|il ministro",
        "verb": "presenta|prepara|esamina|difende|compra|costruisce|aspetta|chiede|propone|organizza|scopre|"
        "sostiene|riduce|cambia|spiega|pubblica|utilizza|cerca|protegge|sviluppa|accetta|condivide|migliora|"
        "critica|annuncia",
        "obj": "un nuovo progetto|i risultati dell'indagine|una soluzione semplice|il bilancio dell'anno|"
        "case più grandi|la riforma delle pensioni|un accordo con i sindacati|i prezzi dell'energia|"
        "una grande festa|il programma scolastico|libri antichi|la qualità dell'acqua|un piano dei trasporti|"
        "i diritti dei lavoratori|una mostra sulla storia|il mercato del lavoro|idee molto diverse|"
        "la sicurezza delle strade|una relazione dettagliata|i bisogni delle famiglie|un piccolo negozio|"
        "lo sviluppo sostenibile|strumenti per le scuole|la lingua italiana|un viaggio in treno",
        "adv": "da diversi anni|durante la prossima settimana|con molta pazienza|nel centro della città|"
        "senza alcuna difficoltà|nonostante la crisi economica|per la prima volta|prima della fine del mese|"
        "secondo gli esperti|grazie ai loro sforzi|ogni mattina|sotto la pioggia|all'inizio dell'estate|"
        "in tutta Italia|con il sostegno dello Stato|dopo una lunga discussione|vicino alla stazione|"
        "per le prossime generazioni|dai nostri vicini|per tutto l'inverno",
        "open": "Oggi,|Infatti,|Tuttavia,|Inoltre,|Da qualche tempo,|Secondo il rapporto,|Eppure,|Anche,|"
        "Secondo noi,|Ieri sera,",
        "link": "ma|e|perché|mentre|anche se|poiché|quindi|infatti",
    },
    "pt": {
        "subj": "o governo|a cidade|as crianças|a nossa equipa|o diretor|a maioria das pessoas|o meu vizinho|"
        "esta empresa|o professor|os habitantes da aldeia|a comissão europeia|um jovem médico|os estudantes|"
        "a minha família|o presidente da câmara|uma associação local|os investigadores|o público|"
        "o banco central|cada cidadão|o jornal|os agricultores|a nossa sociedade|a região|o ministro",
        "verb": "apresenta|prepara|examina|defende|compra|constrói|espera|pede|propõe|organiza|descobre|apoia|"
        "reduz|muda|explica|publica|utiliza|procura|protege|desenvolve|aceita|partilha|melhora|critica|anuncia",
        "obj": "um novo projeto|os resultados do inquérito|uma solução simples|o orçamento do ano|casas maiores|"
        "a reforma das pensões|um acordo com os sindicatos|os preços da energia|uma grande festa|"
        "o programa escolar|livros antigos|a qualidade da água|um plano de transportes|"
        "os direitos dos trabalhadores|uma exposição sobre a história|o mercado de trabalho|"
        "ideias muito diferentes|a segurança das estradas|um relatório detalhado|as necessidades das famílias|"
        "uma pequena loja|o desenvolvimento sustentável|ferramentas para as escolas|a língua portuguesa|"
        "uma viagem de comboio",
        "adv": "há vários anos|durante a próxima semana|com muita paciência|no centro da cidade|"
        "sem nenhuma dificuldade|apesar da crise económica|pela primeira vez|antes do fim do mês|"
        "segundo os especialistas|graças aos seus esforços|todas as manhãs|debaixo de chuva|"
        "no início do verão|em todo o país|com o apoio do Estado|depois de uma longa discussão|"
        "perto da estação|para as próximas gerações|em casa dos nossos vizinhos|ao longo do inverno",
        "open": "Hoje,|De facto,|No entanto,|Além disso,|Há algum tempo,|Segundo o relatório,|Contudo,|Também,|"
        "Na nossa opinião,|Ontem à noite,",
        "link": "mas|e|porque|enquanto|embora|já que|por isso|pois",
    },
    "nl": {
        "subj": "de regering|de stad|de kinderen|ons team|de directeur|de meeste mensen|mijn buurman|dit bedrijf|"
        "de leraar|de inwoners van het dorp|de Europese Commissie|een jonge arts|de studenten|mijn familie|"
        "de burgemeester|een plaatselijke vereniging|de onderzoekers|het publiek|de centrale bank|elke burger|"
        "de krant|de boeren|onze samenleving|het land|de minister",
        "verb": "presenteert|plant|onderzoekt|verdedigt|koopt|bouwt|verwacht|vraagt|steunt|organiseert|ontdekt|"
        "bespreekt|verlaagt|verandert|verklaart|publiceert|gebruikt|zoekt|beschermt|ontwikkelt|accepteert|deelt|"
        "verbetert|bekritiseert|aanvaardt",
        "obj": "een nieuw project|de resultaten van het onderzoek|een eenvoudige oplossing|"
        "de begroting voor het jaar|grotere huizen|de hervorming van de pensioenen|een akkoord met de vakbonden|"
        "de prijzen van energie|een groot feest|het programma van de school|oude boeken|"
        "de kwaliteit van het water|een plan voor het vervoer|de rechten van de werknemers|"
        "een tentoonstelling over de geschiedenis|de arbeidsmarkt|heel andere ideeën|de veiligheid op de wegen|"
        "een uitgebreid verslag|de behoeften van de gezinnen|een kleine winkel|de duurzame ontwikkeling|"
        "nieuwe hulpmiddelen voor de scholen|de Nederlandse taal|een reis met de trein",
        "adv": "al enkele jaren|tijdens de volgende week|met veel geduld|in het centrum van de stad|"
        "zonder enige moeite|ondanks de economische crisis|voor het eerst|voor het einde van de maand|"
        "volgens de deskundigen|dankzij hun inspanningen|elke ochtend|in de regen|aan het begin van de zomer|"
        "in heel Nederland|met de steun van de overheid|na een lange discussie|bij het station|"
        "voor de volgende generaties|bij onze buren|de hele winter lang",
        "open": "Vandaag|Bovendien|Toch|Sinds enige tijd|Volgens het rapport|Echter|Gisteravond|Nu|Daarom|"
        "Op dit moment",
        "link": "maar|en|want|of",
    },
}
_VERB_SECOND = ("de", "nl")
LANGUAGES = tuple(_LANGUAGE_PARTS)


@functools.cache
def _language_parts(lang: str) -> dict[str, list[str]]:
    return {k: v.split("|") for k, v in _LANGUAGE_PARTS[lang].items()}


def _foreign_sentence(lang: str, rng: Random) -> str:
    p = _language_parts(lang)

    def clause() -> str:
        return f"{rng.choice(p['subj'])} {rng.choice(p['verb'])} {rng.choice(p['obj'])} {rng.choice(p['adv'])}"

    roll = rng.random()
    if roll < 0.3:
        if lang in _VERB_SECOND:
            text = f"{rng.choice(p['open'])} {rng.choice(p['verb'])} {rng.choice(p['subj'])} {rng.choice(p['obj'])}"
        else:
            text = f"{rng.choice(p['open'])} {clause()}"
    elif roll < 0.6:
        text = f"{clause()}, {rng.choice(p['link'])} {clause()}"
    else:
        text = clause()
    return text[0].upper() + text[1:] + rng.choice(".....!?")


def foreign_doc(lang: str, rng: Random) -> str:
    target = rng.randint(1_000, 4_000)
    lines: list[str] = []
    size = 0
    while size < target:
        line = " ".join(_foreign_sentence(lang, rng) for _ in range(rng.randint(3, 6)))
        lines.append(line)
        size += len(line.encode()) + 1
    return "\n".join(lines)
